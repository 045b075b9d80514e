//! How an HTTP request reaches its server: the HTTP version, TLS options (a
//! CA bundle, a client certificate, the server name, the minimum version),
//! pinned addresses, the address family, and basic authentication.

use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::request::{template, Scope};
use crate::config::diag::Ctx;
use crate::config::raw::{RawHttp, RawHttpTls, RawScalar};
use crate::config::template::Template;

/// The largest PEM file read (a CA bundle of the whole web is ~250 KiB).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// `http.version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// HTTP/2 where TLS's ALPN agrees, else HTTP/1.1; HTTP/1.1 in clear text.
    #[default]
    Auto,
    Http1,
    /// Only HTTP/2: ALPN `h2` over TLS, prior knowledge (h2c) in clear text.
    Http2,
}

/// `http.ip_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpVersion {
    /// Both families, IPv6 first, raced as Happy Eyeballs (RFC 8305) does.
    #[default]
    Any,
    V4,
    V6,
}

impl IpVersion {
    /// How `ip_version` is written, and what each means.
    pub const WRITTEN: [(&'static str, IpVersion); 3] = [
        ("any", IpVersion::Any),
        ("4", IpVersion::V4),
        ("6", IpVersion::V6),
    ];

    /// Whether an address is of this family.
    pub fn admits(self, ip: &IpAddr) -> bool {
        match self {
            IpVersion::Any => true,
            IpVersion::V4 => ip.is_ipv4(),
            IpVersion::V6 => ip.is_ipv6(),
        }
    }
}

/// `http.tls.min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMin {
    Tls12,
    Tls13,
}

/// `http.tls`, its files read and parsed when the probe is loaded.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `ca_file`: the CAs trusted instead of the system's and Mozilla's.
    pub roots: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// `cert_file` and `key_file`: the client's identity for mutual TLS.
    pub client: Option<Arc<ClientIdentity>>,
    pub server_name: Option<String>,
    pub min_version: Option<TlsMin>,
}

/// A client certificate chain and its key. The key is never shown.
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Where the certificate came from, for messages.
    pub cert_file: PathBuf,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_file", &self.cert_file)
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// `http.basic_auth`: templates rendered at each run (`${env:…}`).
#[derive(Clone)]
pub struct BasicAuth {
    pub username: Template,
    pub password: Template,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `http.proxy`: where a connection goes first, and which hosts skip it.
#[derive(Clone, PartialEq, Eq)]
pub enum Proxy {
    /// `env`: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read at each connection.
    Env,
    /// A proxy URL and the `no_proxy` list.
    Url { url: url::Url, no_proxy: String },
    /// `direct`: no proxy, whatever the settings' `proxy` says.
    Direct,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proxy::Env => f.write_str("Env"),
            Proxy::Direct => f.write_str("Direct"),
            Proxy::Url { url, no_proxy } => f
                .debug_struct("Url")
                .field("url", &Proxy::shown(url))
                .field("no_proxy", no_proxy)
                .finish(),
        }
    }
}

impl Proxy {
    /// `proxy` and `no_proxy` as written (in a probe or in the settings): the
    /// proxy, or what is wrong, said for the field `proxy`.
    pub fn parse(text: &str, no_proxy: &str) -> Result<Proxy, ProxyProblem> {
        match text {
            "env" | "direct" if !no_proxy.is_empty() => Err(ProxyProblem::NoProxy(format!(
                "with `proxy: {text}`, `no_proxy` has no use{}; remove it",
                if text == "env" { " (the environment's NO_PROXY applies)" } else { "" }
            ))),
            "env" => Ok(Proxy::Env),
            "direct" => Ok(Proxy::Direct),
            _ => match url::Url::parse(text) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "socks5" | "socks5h")
                        && url.host_str().is_some()
                        && url.port_or_known_default().is_some() =>
                {
                    Ok(Proxy::Url {
                        url,
                        no_proxy: no_proxy.to_string(),
                    })
                }
                Ok(url) if url.scheme() == "socks5" || url.scheme() == "socks5h" => Err(
                    ProxyProblem::Proxy("a SOCKS proxy needs its port (usually :1080)".into()),
                ),
                _ => Err(ProxyProblem::Proxy(
                    "is not a proxy URL: write http://host:port (HTTP CONNECT), socks5://host:port or socks5h://host:port, `env` or `direct`".into(),
                )),
            },
        }
    }

    /// A proxy URL without its credentials, for messages and `info`.
    pub fn shown(url: &url::Url) -> String {
        let mut u = url.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.to_string()
    }
}

/// What is wrong with a `proxy` (the message for `proxy`) or its `no_proxy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyProblem {
    Proxy(String),
    NoProxy(String),
}

/// `http.oauth2`: templates rendered at each fetch (`${env:…}`).
#[derive(Clone)]
pub struct OAuth2 {
    pub token_url: Template,
    pub client_id: Template,
    pub client_secret: Template,
    pub scopes: Vec<String>,
}

impl fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The reach options of a request, validated.
pub(super) struct Reach {
    pub version: HttpVersion,
    pub tls: TlsOptions,
    pub resolve: Vec<(String, IpAddr)>,
    pub ip_version: IpVersion,
    pub basic_auth: Option<Box<BasicAuth>>,
    pub proxy: Option<Proxy>,
    pub oauth2: Option<Box<OAuth2>>,
    pub source_address: Option<IpAddr>,
}

/// A scalar that must be one of `allowed`'s names (compared as written: `2`
/// and `"2"` alike): the value paired with it.
pub(in crate::config) fn one_of<T: Copy>(
    ctx: &mut Ctx<'_>,
    field: &str,
    raw: &RawScalar,
    allowed: &[(&str, T)],
) -> Option<T> {
    let text = raw.to_string();
    if let Some((_, v)) = allowed.iter().find(|(name, _)| *name == text) {
        return Some(*v);
    }
    let quoted: Vec<String> = allowed.iter().map(|(a, _)| format!("{a:?}")).collect();
    ctx.error(
        field,
        format!("{text:?} is not one of {}", quoted.join(", ")),
    );
    None
}

pub(super) fn validate_reach(raw: &RawHttp, ctx: &mut Ctx<'_>, at: &str, scope: &Scope) -> Reach {
    use HttpVersion::{Auto, Http1, Http2};
    let version = (raw.version.as_ref())
        .and_then(|v| {
            let allowed = [("auto", Auto), ("1.1", Http1), ("2", Http2)];
            one_of(ctx, &format!("{at}.version"), v, &allowed)
        })
        .unwrap_or_default();
    let ip_version = (raw.ip_version.as_ref())
        .and_then(|v| one_of(ctx, &format!("{at}.ip_version"), v, &IpVersion::WRITTEN))
        .unwrap_or_default();
    let mut resolve = Vec::new();
    for (host, addr) in &raw.resolve {
        let field = format!("{at}.resolve.{host}");
        match addr.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) if ip_version.admits(&ip) => resolve.push((host.to_ascii_lowercase(), ip)),
            Ok(ip) => ctx.error(
                &field,
                format!("{ip} is not an address of the family `ip_version` asks for; pin an address of that family or change `ip_version`"),
            ),
            Err(_) => ctx.error(
                &field,
                format!("{addr:?} is not an IP address; `resolve` maps a host name to an address such as 192.0.2.7 or ::1"),
            ),
        }
    }
    let tls = raw
        .tls
        .as_ref()
        .map(|t| validate_tls(t, ctx, &format!("{at}.tls")))
        .unwrap_or_default();
    let basic_auth = validate_basic_auth(raw, ctx, at, scope);
    let proxy = validate_proxy(raw, ctx, at);
    let oauth2 = validate_oauth2(raw, ctx, at, scope);
    let source_address = raw
        .source_address
        .as_ref()
        .and_then(|a| match a.parse::<IpAddr>() {
            Ok(ip) if ip_version.admits(&ip) => Some(ip),
            Ok(ip) => {
                ctx.error(
                    &format!("{at}.source_address"),
                    format!("{ip} is not of the family `ip_version` asks for"),
                );
                None
            }
            Err(_) => {
                ctx.error(
                    &format!("{at}.source_address"),
                    format!("{a:?} is not an IP address; give one of this host's addresses"),
                );
                None
            }
        });
    Reach {
        source_address,
        oauth2,
        proxy,
        version,
        tls,
        resolve,
        ip_version,
        basic_auth,
    }
}

fn validate_oauth2(
    raw: &RawHttp,
    ctx: &mut Ctx<'_>,
    at: &str,
    scope: &Scope,
) -> Option<Box<OAuth2>> {
    raw.oauth2.as_ref().and_then(|o| {
        let field = |name: &str| format!("{at}.oauth2.{name}");
        let token_url = template(ctx, &field("token_url"), &o.token_url, scope);
        if let Some(u) = (token_url.as_ref()).and_then(|t| t.render_masked().ok()) {
            super::request::check_url(ctx, &field("token_url"), &u);
        }
        let client_id = template(ctx, &field("client_id"), &o.client_id, scope);
        let client_secret = template(ctx, &field("client_secret"), &o.client_secret, scope);
        if raw.basic_auth.is_some() {
            ctx.error(
                &field("token_url"),
                "both `oauth2` and `basic_auth` set the Authorization header; keep one",
            );
        }
        Some(Box::new(OAuth2 {
            token_url: token_url?,
            client_id: client_id?,
            client_secret: client_secret?,
            scopes: o.scopes.clone(),
        }))
    })
}

fn validate_basic_auth(
    raw: &RawHttp,
    ctx: &mut Ctx<'_>,
    at: &str,
    scope: &Scope,
) -> Option<Box<BasicAuth>> {
    raw.basic_auth.as_ref().and_then(|b| {
        let username = template(
            ctx,
            &format!("{at}.basic_auth.username"),
            &b.username,
            scope,
        );
        let password = template(
            ctx,
            &format!("{at}.basic_auth.password"),
            &b.password,
            scope,
        );
        if username.as_ref().is_some_and(|u| u.source().contains(':')) {
            ctx.error(
                &format!("{at}.basic_auth.username"),
                "a basic-auth user name cannot contain `:` (RFC 7617)",
            );
            return None;
        }
        Some(Box::new(BasicAuth {
            username: username?,
            password: password?,
        }))
    })
}

fn validate_proxy(raw: &RawHttp, ctx: &mut Ctx<'_>, at: &str) -> Option<Proxy> {
    let no_proxy = raw.no_proxy.clone().unwrap_or_default();
    let Some(text) = raw.proxy.as_deref() else {
        if !no_proxy.is_empty() {
            ctx.error(
                &format!("{at}.no_proxy"),
                "`no_proxy` without `proxy` has nothing to skip; add `proxy:` or remove it",
            );
        }
        return None;
    };
    match Proxy::parse(text, &no_proxy) {
        Ok(p) => Some(p),
        Err(ProxyProblem::Proxy(m)) => {
            ctx.error(&format!("{at}.proxy"), m);
            None
        }
        Err(ProxyProblem::NoProxy(m)) => {
            ctx.error(&format!("{at}.no_proxy"), m);
            None
        }
    }
}

fn validate_tls(raw: &RawHttpTls, ctx: &mut Ctx<'_>, at: &str) -> TlsOptions {
    let base = ctx.file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let roots = raw.ca_file.as_ref().and_then(|f| {
        let field = format!("{at}.ca_file");
        let (path, pem) = read_pem(ctx, &field, &base, f)?;
        let certs = certificates(ctx, &field, &path, &pem)?;
        Some(Arc::new(certs))
    });
    let client = match (&raw.cert_file, &raw.key_file) {
        (Some(c), Some(k)) => {
            let cert_field = format!("{at}.cert_file");
            let key_field = format!("{at}.key_file");
            let chain = read_pem(ctx, &cert_field, &base, c)
                .and_then(|(path, pem)| certificates(ctx, &cert_field, &path, &pem));
            let key = read_pem(ctx, &key_field, &base, k).and_then(|(path, pem)| {
                PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|e| {
                        ctx.error(
                            &key_field,
                            format!("{} holds no private key rustls can read ({e}); give a PEM file with a PKCS#8, PKCS#1 or SEC1 key", path.display()),
                        )
                    })
                    .ok()
            });
            let cert_file = base.join(c);
            chain.zip(key).map(|(chain, key)| {
                Arc::new(ClientIdentity {
                    chain,
                    key,
                    cert_file,
                })
            })
        }
        (Some(_), None) => {
            ctx.error(
                &format!("{at}.cert_file"),
                "a client certificate needs its key: add `key_file`",
            );
            None
        }
        (None, Some(_)) => {
            ctx.error(
                &format!("{at}.key_file"),
                "a key without its certificate: add `cert_file`",
            );
            None
        }
        (None, None) => None,
    };
    let server_name = raw.server_name.as_ref().and_then(|n| {
        match rustls::pki_types::ServerName::try_from(n.as_str()) {
            Ok(_) => Some(n.clone()),
            Err(e) => {
                ctx.error(
                    &format!("{at}.server_name"),
                    format!("{n:?} is not a valid TLS server name ({e})"),
                );
                None
            }
        }
    });
    let min_version = raw.min_version.as_ref().and_then(|v| {
        let allowed = [("1.2", TlsMin::Tls12), ("1.3", TlsMin::Tls13)];
        one_of(ctx, &format!("{at}.min_version"), v, &allowed)
    });
    TlsOptions {
        roots,
        client,
        server_name,
        min_version,
    }
}

/// Reads a PEM file named at `field` (relative to the probe file's folder), capped at [`MAX_PEM_BYTES`].
fn read_pem(ctx: &mut Ctx<'_>, field: &str, base: &Path, name: &str) -> Option<(PathBuf, Vec<u8>)> {
    let path = base.join(name);
    let read = std::fs::File::open(&path).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    match read {
        Ok(bytes) if bytes.len() as u64 > MAX_PEM_BYTES => {
            ctx.error(
                field,
                format!(
                    "{} is over {MAX_PEM_BYTES} bytes; is it a PEM file?",
                    path.display()
                ),
            );
            None
        }
        Ok(bytes) => Some((path, bytes)),
        Err(e) => {
            ctx.error(
                field,
                format!(
                    "cannot read {} ({e}); a relative path is taken from the probe file's folder",
                    path.display()
                ),
            );
            None
        }
    }
}

/// The certificates in a PEM file: at least one, each parsed.
fn certificates(
    ctx: &mut Ctx<'_>,
    field: &str,
    path: &Path,
    pem: &[u8],
) -> Option<Vec<CertificateDer<'static>>> {
    match CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => Some(certs),
        Ok(_) => {
            ctx.error(
                field,
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            );
            None
        }
        Err(e) => {
            ctx.error(
                field,
                format!("{} is not a readable PEM file ({e})", path.display()),
            );
            None
        }
    }
}
