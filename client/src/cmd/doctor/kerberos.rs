//! The Kerberos steps (`auth = "kerberos"`): the ticket in the credential cache (principal,
//! realm, time left; read locally through GSS-API, as the login would) against the realm the
//! gateway's service principal is in, then the service ticket for `HTTP/host` from the KDC,
//! which is the first Negotiate token the transport makes anyway: it is kept for the login.

use std::time::Duration;

use libgssapi::credential::{Cred, CredUsage};
use libgssapi::oid::{OidSet, GSS_MECH_KRB5};

use super::report::{Report, Status};
use crate::error::{Error, KerberosContext, KerberosFailure};
use crate::transport::kerberos::{Negotiation, Negotiator};

/// The ticket-granting ticket in the default cache: whose, and for how long. Returns
/// whether there is one to ask the KDC with.
pub fn ticket(report: &mut Report, cx: &KerberosContext) -> bool {
    let cache = std::env::var("KRB5CCNAME")
        .ok()
        .filter(|c| !c.is_empty())
        .map(|c| format!("cache {c}"))
        .unwrap_or_else(|| "the default cache".into());
    let acquired = OidSet::singleton(GSS_MECH_KRB5)
        .and_then(|mechs| Cred::acquire(None, None, CredUsage::Initiate, Some(&mechs)));
    let cred = match acquired {
        Ok(c) => c,
        Err(e) => {
            let failure = KerberosFailure::from_gss_text(&e.to_string(), cx);
            report.fail(
                "kerberos ticket",
                &Error::Kerberos {
                    failure,
                    context: Box::new(cx.clone()),
                },
            );
            return false;
        }
    };
    let principal = cred
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an unnamed principal".into());
    let left = cred.lifetime().unwrap_or_default();
    if left.is_zero() {
        report.add_hint(
            "kerberos ticket",
            Status::Fail,
            format!("{principal} in {cache}: expired"),
            format!("run kinit {principal}"),
        );
        return false;
    }
    let detail = format!("{principal} in {cache}, {} left", duration(left));
    let theirs = principal.rsplit_once('@').map(|(_, r)| r.to_owned());
    match (&theirs, &cx.realm) {
        (Some(t), Some(want)) if t != want => report.add_hint(
            "kerberos ticket",
            Status::Warn,
            format!(
                "{detail}; but the gateway's principal {} is in realm {want}",
                cx.service_principal()
            ),
            format!(
                "unless {t} trusts {want} (cross-realm), run kinit {}@{want}",
                cx.user.as_deref().unwrap_or("you")
            ),
        ),
        _ => report.ok("kerberos ticket", detail),
    }
    true
}

/// Ask the KDC for the gateway's service ticket (the first Negotiate token); the login to
/// hand to the connection when it worked.
pub async fn service(report: &mut Report, cx: &KerberosContext) -> Option<Negotiation> {
    match Negotiator::start(cx.clone()).await {
        Ok((negotiator, token)) => {
            report.ok(
                "kerberos service",
                format!("the KDC issued a ticket for {}", cx.service_principal()),
            );
            Some(Negotiation { negotiator, token })
        }
        Err(e) => {
            report.fail("kerberos service", &e);
            None
        }
    }
}

/// `9 h 59 min`, `12 min`.
fn duration(d: Duration) -> String {
    let mins = d.as_secs() / 60;
    match (mins / 60, mins % 60) {
        (0, m) => format!("{m} min"),
        (h, m) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Duration::from_secs(35_990)), "9 h 59 min");
        assert_eq!(duration(Duration::from_secs(720)), "12 min");
    }
}
