//! An HTTPS probe's expectations on what TLS agreed: the certificate's
//! issuer and names, and the cipher suite, against a server on loopback with
//! a certificate from a test CA.

use prober::run::ErrorClass;

use crate::http_reach::{run, serve, server_tls, Pki, Speaks};

#[tokio::test]
async fn the_certificate_issuer_names_and_cipher_are_asserted() {
    let pki = Pki::new("issuer");
    let server = pki.issue("server", &["shop.internal", "*.shop.internal"]);
    let addr = serve("127.0.0.1:0", Speaks::Both, Some(server_tls(&server, None))).await;
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let reach = format!(
        "tls:\n  ca_file: {}\n  server_name: shop.internal",
        pki.ca_file().display()
    );

    let o = run(
        &url,
        &reach,
        "cert_issuer: \"CN=issuer test CA\"\ncert_names: [shop.internal, api.shop.internal]\ntls_cipher: \"AES|CHACHA20\"",
    )
    .await;

    assert!(o.success, "{o:#?}");
    let checks: Vec<(&str, &str, bool)> = (o.assertions.iter())
        .map(|a| (a.check.as_str(), a.expected.as_str(), a.passed))
        .collect();
    for want in [
        ("certificate issuer matches", "CN=issuer test CA", true),
        ("certificate covers", "shop.internal", true),
        ("certificate covers", "api.shop.internal", true),
        ("tls cipher matches", "AES|CHACHA20", true),
    ] {
        assert!(checks.contains(&want), "{want:?} in {checks:?}");
    }

    // A name the certificate does not cover, an issuer it does not have, a suite not used.
    let o = run(
        &url,
        &reach,
        "cert_names: [a.b.shop.internal]\ncert_issuer: \"Let's Encrypt\"\ntls_cipher: RC4",
    )
    .await;

    assert!(!o.success);
    assert_eq!(o.error.as_ref().unwrap().class, ErrorClass::Assertion);
    let failed: Vec<(&str, &str)> = (o.assertions.iter())
        .filter(|a| !a.passed)
        .map(|a| (a.check.as_str(), a.actual.as_str()))
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(
        failed.iter().any(
            |(c, a)| *c == "certificate covers" && *a == "SANs: shop.internal, *.shop.internal"
        ),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|(c, a)| *c == "certificate issuer matches" && a.contains("issuer test CA")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|(c, a)| *c == "tls cipher matches" && a.starts_with("TLS13_")),
        "{failed:?}"
    );

    // Over http:// there is no certificate to hold to them: said so.
    let plain = serve("127.0.0.1:0", Speaks::Both, None).await;
    let o = run(
        &format!("http://{plain}/"),
        "",
        "cert_names: [shop.internal]",
    )
    .await;
    assert!(!o.success);
    assert!(
        o.assertions
            .iter()
            .any(|a| a.actual.contains("no certificate")),
        "{:?}",
        o.assertions
    );
}

#[test]
fn bad_tls_expectations_are_refused_at_their_field() {
    let errors = crate::http_reach::load_errors(
        "name: t\nevery: 1m\nhttp: {url: \"https://h/\"}\nexpect:\n  tls_cipher: \"(\"\n  cert_names: [\"a b\"]\n",
    )
    .join("\n");
    assert!(
        errors.contains("expect.tls_cipher") && errors.contains("not a valid regular expression"),
        "{errors}"
    );
    assert!(
        errors.contains("expect.cert_names[0]") && errors.contains("not a host name"),
        "{errors}"
    );
}
