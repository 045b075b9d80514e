//! `int8[]` columns read straight from Postgres' binary array format.
//!
//! The trend reads return every probe's minute blocks and bins as `int8[]`
//! (hundreds to thousands of values a row); sqlx decodes an array element
//! by element through its generic value path, which was a tenth of the
//! trend analysis' CPU (BENCHMARKS.md, Trends). The binary format of a
//! one-dimensional array without NULLs is a fixed header and then each
//! value as its length (8) and 8 big-endian bytes; [`Int8s`] reads that in
//! one pass and hands anything else (text format, NULL elements) to sqlx.

use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueFormat, PgValueRef, Postgres};
use sqlx::{Decode, Type};

/// Postgres' type oid of `int8`.
const INT8_OID: u32 = 20;

/// The values of an `int8[]` column.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Int8s(pub Vec<i64>);

impl Type<Postgres> for Int8s {
    fn type_info() -> PgTypeInfo {
        <Vec<i64> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Vec<i64> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for Int8s {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.format() == PgValueFormat::Binary {
            if let Some(values) = parse(value.as_bytes()?)? {
                return Ok(Int8s(values));
            }
        }
        <Vec<i64> as Decode<Postgres>>::decode(value).map(Int8s)
    }
}

/// The values of a binary `int8[]` of at most one dimension; `None` when it
/// holds a NULL element (sqlx's decoding then says so); an error when the
/// bytes are not such an array.
fn parse(buf: &[u8]) -> Result<Option<Vec<i64>>, BoxDynError> {
    let word = |at: usize| -> Result<[u8; 4], BoxDynError> {
        buf.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("an int8[] value of {} bytes is cut short", buf.len()).into())
    };
    let (ndim, has_null) = (i32::from_be_bytes(word(0)?), i32::from_be_bytes(word(4)?));
    let oid = u32::from_be_bytes(word(8)?);
    if ndim == 0 {
        return Ok(Some(Vec::new()));
    }
    if ndim != 1 || oid != INT8_OID {
        return Err(format!(
            "expected a one-dimensional int8[], got {ndim} dimensions of type oid {oid}"
        )
        .into());
    }
    if has_null != 0 {
        return Ok(None);
    }
    let len = i32::from_be_bytes(word(12)?);
    let len = usize::try_from(len).map_err(|_| format!("an int8[] of length {len}"))?;
    // The lower bound (word 16) does not matter to a list of values, but
    // the header holds it.
    word(16)?;
    let body = buf.get(20..).unwrap_or_default();
    let want = len.checked_mul(12).ok_or("an int8[] too long to hold")?;
    if body.len() != want {
        return Err(format!(
            "an int8[] of {len} values holds {} bytes of them, not {want}",
            body.len()
        )
        .into());
    }
    let mut out = Vec::with_capacity(len);
    for item in body.chunks_exact(12) {
        let (size, value) = item.split_at(4);
        if size != 8i32.to_be_bytes() {
            return Err("an int8[] element is not 8 bytes long".into());
        }
        let value: [u8; 8] = value.try_into()?;
        out.push(i64::from_be_bytes(value));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary form Postgres sends for `values` (1-based, no NULL).
    fn binary(values: &[i64]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [1i32, 0, INT8_OID as i32, values.len() as i32, 1] {
            b.extend(w.to_be_bytes());
        }
        for v in values {
            b.extend(8i32.to_be_bytes());
            b.extend(v.to_be_bytes());
        }
        b
    }

    #[test]
    fn values_are_read_in_order_with_their_sign() {
        let values = [0, 1, -1, i64::MAX, i64::MIN, 1_234_567_890_123];
        assert_eq!(parse(&binary(&values)).unwrap(), Some(values.to_vec()));
        // An empty array has no dimension.
        let empty: Vec<u8> = [0i32, 0, INT8_OID as i32]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(parse(&empty).unwrap(), Some(Vec::new()));
    }

    #[test]
    fn a_null_element_is_left_to_sqlx_and_bad_bytes_are_errors() {
        let mut with_null = binary(&[1]);
        with_null[4..8].copy_from_slice(&1i32.to_be_bytes());
        assert_eq!(parse(&with_null).unwrap(), None);
        let whole = binary(&[1, 2, 3]);
        // Cut short, in the header and in the values; a negative length.
        assert!(parse(&whole[..10]).is_err());
        assert!(parse(&whole[..18]).is_err());
        assert!(parse(&whole[..whole.len() - 1]).is_err());
        let mut negative = whole.clone();
        negative[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(parse(&negative).is_err());
        // Another element type (int4) or two dimensions.
        let mut int4 = whole.clone();
        int4[8..12].copy_from_slice(&23u32.to_be_bytes());
        assert!(parse(&int4).is_err());
        let mut two = whole;
        two[0..4].copy_from_slice(&2i32.to_be_bytes());
        assert!(parse(&two).is_err());
    }
}
