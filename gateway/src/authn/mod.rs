//! Authentication: who is on the other end of a connection, as an [`Identity`].
//!
//! Each transport proves identity its own way and produces the same [`Identity`]; the rest
//! of the gateway (authz, api, audit) only ever sees that: TLS client certificates
//! ([`tls`]), the unix socket's peer uid ([`peercred`]), and Kerberos ([`kerberos`]); every
//! identity carries the user's unix groups on this host ([`groups`]). With
//! `[kerberos]`, the TLS verifier also admits clients without a certificate, and the API
//! binds such a connection to the principal of its first `Authorization: Negotiate`
//! ([`crate::api::negotiate`]). [`keytab`] finds the service keytab at
//! startup; the private `gss_ffi` module is the crate's only unsafe code
//! (`gss_acquire_cred_from`, which the safe `libgssapi` API lacks).

pub mod groups;
#[allow(unsafe_code)]
mod gss_ffi;
pub mod kerberos;
pub mod keytab;
pub mod peercred;
pub mod tls;

use virtgate_proto::{AuthMethod, WhoAmI};

/// An authenticated peer, fixed for the lifetime of its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name that rules match (certificate CN, unix user, Kerberos principal's user).
    pub user: String,
    /// How it was established; shown by `whoami` and written to the audit log.
    pub method: AuthMethod,
    /// The certificate subject or full Kerberos principal, when there is one.
    pub principal: Option<String>,
    /// The user's unix groups on the gateway host ([`groups`]), whatever the login method;
    /// rules may name `group:NAME`.
    pub groups: Vec<String>,
    /// The peer's address (`ip:port`, or `unix`), for logs and the audit log.
    pub peer: Option<String>,
}

impl Identity {
    /// The `GET /v1/whoami` body.
    pub fn whoami(&self) -> WhoAmI {
        WhoAmI {
            user: self.user.clone(),
            method: self.method,
            principal: self.principal.clone(),
            groups: self.groups.clone(),
            peer: self.peer.clone(),
            gateway_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}
