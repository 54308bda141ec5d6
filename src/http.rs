//! What every HTTP client of homelab-flux shares: the user agent GitHub's and the API server's
//! logs name it by, the loopback rule for plain `http://`, and the one way a reqwest client is
//! built (rustls with ring, the system's and the web's root certificates, timeouts, no proxy for
//! loopback addresses).

use std::net::IpAddr;
use std::sync::Once;
use std::time::Duration;

use reqwest::Url;

/// `homelab-flux/<version>`, in every request to GitHub, a manifests server and the API server.
pub const USER_AGENT: &str = concat!("homelab-flux/", env!("CARGO_PKG_VERSION"));

/// True for `localhost`, 127.0.0.0/8 and `::1`: the only hosts plain `http://` is accepted for.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A client builder for requests to `target`: the user agent, the timeouts, the system's root
/// certificates (rustls-platform-verifier, reqwest's default) with the web's merged in so that a
/// machine with an empty or stale store still works, and no proxy for a loopback `target` (over
/// plain http a proxy would see what is sent). Callers add what is theirs (headers, redirects).
pub fn client(
    target: &Url,
    connect_timeout: Duration,
    timeout: Duration,
) -> reqwest::ClientBuilder {
    install_crypto_provider();
    let web_roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der).ok());
    let builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .tls_certs_merge(web_roots);
    if is_loopback(target) {
        builder.no_proxy()
    } else {
        builder
    }
}

/// rustls needs one process-wide crypto provider (ring) before the first client is built.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race against another installer is fine: a provider is in place either way.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_localhost_127_and_ipv6_one() {
        for url in [
            "http://localhost:8080/x",
            "http://LOCALHOST/",
            "http://127.0.0.1/",
            "http://127.9.8.7:1/",
            "http://[::1]:9/",
        ] {
            assert!(is_loopback(&Url::parse(url).unwrap()), "{url}");
        }
        for url in [
            "http://10.0.0.1/",
            "http://localhost.example/",
            "http://[::2]/",
            "http://example.com/",
        ] {
            assert!(!is_loopback(&Url::parse(url).unwrap()), "{url}");
        }
    }
}
