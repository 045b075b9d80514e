//! Compressed response bodies (`Content-Encoding: gzip`, `deflate`, `br`),
//! decoded so the expectations see the text a client sees. The decoded size
//! is held to `http.max_body_bytes` as the wire size is, so a small
//! compressed body cannot expand into gigabytes (a "zip bomb").

use std::io::Read;

use url::Url;

use crate::probe::net::fail;
use crate::run::{ErrorClass, ProbeError};

/// The codings of a `Content-Encoding` value, in the order they were applied.
fn codings(value: &str) -> Vec<String> {
    (value.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect()
}

/// The body with every coding of `encoding` undone, or `None` when it has
/// none this prober knows (the body is then judged as it came).
pub fn decode(
    encoding: &str,
    body: &[u8],
    limit: u64,
    url: &Url,
) -> Result<Option<Vec<u8>>, ProbeError> {
    let codings = codings(encoding);
    if codings.is_empty()
        || codings
            .iter()
            .any(|c| !matches!(c.as_str(), "gzip" | "x-gzip" | "deflate" | "br"))
    {
        return Ok(None);
    }
    let mut data = body.to_vec();
    // Applied first, undone last.
    for c in codings.iter().rev() {
        let reader: Box<dyn Read + '_> = match c.as_str() {
            "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(&data[..])),
            // HTTP's deflate is zlib-wrapped; some servers send it raw.
            "deflate" if data.first().is_some_and(|b| b & 0x0f == 8) => {
                Box::new(flate2::read::ZlibDecoder::new(&data[..]))
            }
            "deflate" => Box::new(flate2::read::DeflateDecoder::new(&data[..])),
            _ => Box::new(brotli_decompressor::Decompressor::new(&data[..], 8192)),
        };
        let mut out = Vec::new();
        reader
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| {
                fail(
                    ErrorClass::InvalidResponse,
                    format!("the body of {url} says `Content-Encoding: {encoding}` but is not valid {c} ({e}); check the server's compression"),
                )
            })?;
        if out.len() as u64 > limit {
            return Err(fail(
                ErrorClass::BodyTooLarge,
                format!(
                    "the {c}-decoded body of {url} passed the limit of {limit} bytes (http.max_body_bytes) and was not decoded further; raise the limit or probe a smaller resource"
                ),
            ));
        }
        data = out;
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn url() -> Url {
        Url::parse("http://example.test/").unwrap_or_else(|e| panic!("{e}"))
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap_or_else(|e| panic!("{e}"));
        e.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn codings_are_undone_in_reverse_and_unknown_ones_left_alone() {
        let twice = gzip(&gzip(b"hello"));
        let out = decode("gzip, gzip", &twice, 100, &url()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out.as_deref(), Some(&b"hello"[..]));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"zlib").unwrap_or_else(|e| panic!("{e}"));
        let z = z.finish().unwrap_or_else(|e| panic!("{e}"));
        let out = decode("Deflate", &z, 100, &url()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out.as_deref(), Some(&b"zlib"[..]));
        assert_eq!(decode("identity", b"x", 100, &url()).ok(), Some(None));
        assert_eq!(decode("zstd", b"x", 100, &url()).ok(), Some(None));
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_an_invalid_response() {
        let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let e = decode("gzip", &bomb, 1024 * 1024, &url()).expect_err("over the limit");
        assert_eq!(e.class, ErrorClass::BodyTooLarge);
        assert!(e.message.contains("max_body_bytes"), "{}", e.message);
        let e = decode("gzip", b"not gzip at all", 100, &url()).expect_err("garbage");
        assert_eq!(e.class, ErrorClass::InvalidResponse);
        assert!(e.message.contains("not valid gzip"), "{}", e.message);
    }
}
