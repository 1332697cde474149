//! Test kit for mtproxy: the other ends of a proxy's connections, on loopback only, and the
//! load tools.
//!
//! - [`client`], [`tls_client`], [`mtproto`]: the reference client (from `mtproxy-client`).
//! - [`fake_dc`], [`fake_me`], [`me_command`]: the fake DC and ME (from `mtproxy-fakes`).
//! - [`tls_site`]: a real TLS site on loopback, what fake-TLS masking splices to.
//! - [`curve25519`]: the checks a passive observer makes on an X25519 key share.
//! - [`openssl_site`]: OpenSSL's `s_server` as the site; [`site_flight`]: reading a
//!   server's whole answer to a hello; [`tap`]: a recording relay in front of a site.
//! - [`capture`]: a packet capture on `lo` (TCP segments as they cross it).
//! - [`bench`]: `mtproxy-bench`, the proxy against C under load.
//!
//! Everything is tokio-based and records what it sees so tests can await facts instead of
//! sleeping.

pub mod bench;
pub mod capture;
pub mod curve25519;
pub mod openssl_site;
pub mod site_flight;
pub mod tap;
pub mod tls_site;

pub use mtproxy_client::{client, mtproto, tls_client};
pub use mtproxy_fakes::{fake_dc, fake_me, me_command};

pub use mtproxy_client::{
    parse_res_pq, read_server_hello, req_pq_multi, server_hello_error, Client, ClientOpts,
    FrameError, ResPq, ServerFrame, ServerHelloError, Tag, TlsOpts, MAX_FRAME,
};
pub use mtproxy_fakes::{DcConfig, DcConnInfo, FakeDc, Reply};
