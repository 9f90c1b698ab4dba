//! The steps that ask the gateway: does it accept us (the first request: in TLS 1.3 that is
//! where a refused certificate shows up, and with Kerberos where the login happens), how far
//! its clock is from ours (its `Date` header), who it thinks we are, and which domains we see.

use std::time::{Duration, SystemTime};

use virtgate_proto::{ApiPath, DomainList, WhoAmI};

use super::report::{Report, Status};
use crate::session::{Keepalive, Session};
use crate::transport::Connected;

/// A clock further off than this is a warning (the `Date` header has whole seconds).
pub const CLOCK_WARN: Duration = Duration::from_secs(5);

/// A clock further off than this is a failure: Kerberos refuses it (its default skew), and
/// certificates that were just issued look "not yet valid".
pub const CLOCK_FAIL: Duration = Duration::from_secs(300);

/// How we log in, for the `accepted` step's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// A client certificate (its subject), or none.
    Certificate(Option<String>),
    /// Kerberos, HTTP Negotiate.
    Kerberos,
    /// SSH: sshd let us in and the gateway knows us by our uid.
    Ssh,
    /// The local unix socket.
    Unix,
}

/// Run the gateway steps over `connected`.
pub async fn run(report: &mut Report, connected: Connected, keepalive: Keepalive, login: Login) {
    let session = match Session::over(connected, keepalive).await {
        Ok(s) => s,
        Err(e) => {
            report.fail("accepted", &e);
            skip_rest(report, "the connection failed");
            return;
        }
    };
    let sent = SystemTime::now();
    let (me, headers) = match session
        .get_json_with_headers::<WhoAmI>(&ApiPath::WhoAmI)
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            report.fail("accepted", &e);
            skip_rest(report, "the gateway did not accept us");
            return;
        }
    };
    let received = SystemTime::now();
    let accepted = match &login {
        Login::Certificate(Some(subject)) => {
            format!("the gateway accepted the certificate {subject}")
        }
        Login::Certificate(None) => {
            "the gateway accepted the connection without a certificate".into()
        }
        Login::Kerberos => format!(
            "the gateway accepted the Kerberos login as {} (and proved its own identity)",
            me.principal.as_deref().unwrap_or(&me.user)
        ),
        Login::Ssh => "the gateway accepted the connection through sshd".into(),
        Login::Unix => "the gateway accepted the connection on its socket".into(),
    };
    report.ok("accepted", accepted);
    clock(report, headers.get(http::header::DATE), sent, received);
    let mut who = format!("{} (method {}", me.user, me.method);
    if let Some(p) = me.principal.as_ref().filter(|p| **p != me.user) {
        who.push_str(&format!(", principal {p}"));
    }
    if !me.groups.is_empty() {
        who.push_str(&format!(", groups {}", me.groups.join(", ")));
    }
    who.push_str(&format!("); virtgated {}", me.gateway_version));
    report.ok("whoami", who);
    match session.get_json::<DomainList>(&ApiPath::Domains).await {
        Ok(list) if list.domains.is_empty() => report.add_hint(
            "domains",
            Status::Warn,
            "none visible",
            "the gateway's rules grant you no domain: ask its admin for a [[rule]]",
        ),
        Ok(list) => {
            let names: Vec<String> = list
                .domains
                .iter()
                .map(|d| match &d.role {
                    Some(r) => format!("{} ({r})", d.name),
                    None => d.name.clone(),
                })
                .collect();
            report.ok(
                "domains",
                format!("{} visible: {}", list.domains.len(), names.join(", ")),
            );
        }
        Err(e) => report.fail("domains", &e),
    }
}

/// The steps after `accepted`, when it failed.
fn skip_rest(report: &mut Report, why: &str) {
    for step in ["clock", "whoami", "domains"] {
        report.skip(step, format!("not tried: {why}"));
    }
}

/// Compare the gateway's `Date` with the middle of our request.
fn clock(
    report: &mut Report,
    date: Option<&http::HeaderValue>,
    sent: SystemTime,
    received: SystemTime,
) {
    let Some(theirs) = date
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
    else {
        report.skip("clock", "the gateway sent no Date header");
        return;
    };
    let ours = sent + received.duration_since(sent).unwrap_or_default() / 2;
    let (ahead, skew) = match theirs.duration_since(ours) {
        Ok(d) => (true, d),
        Err(e) => (false, e.duration()),
    };
    // the header has whole seconds: less than one is no difference
    let secs = skew.as_secs();
    let detail = if secs == 0 {
        "the gateway's clock agrees with ours".to_owned()
    } else {
        format!(
            "the gateway's clock is {secs} s {} ours",
            if ahead { "ahead of" } else { "behind" }
        )
    };
    let hint = "check the time on both machines (`date -u`; NTP / chrony): certificates and \
                Kerberos tickets depend on it";
    if skew > CLOCK_FAIL {
        report.add_hint("clock", Status::Fail, detail, hint);
    } else if skew > CLOCK_WARN {
        report.add_hint("clock", Status::Warn, detail, hint);
    } else {
        report.ok("clock", detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(offset_s: i64) -> (Status, String) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let theirs = if offset_s >= 0 {
            now + Duration::from_secs(offset_s as u64)
        } else {
            now - Duration::from_secs((-offset_s) as u64)
        };
        let value = http::HeaderValue::from_str(&httpdate::fmt_http_date(theirs)).unwrap();
        let mut r = Report::default();
        clock(&mut r, Some(&value), now, now);
        (r.checks[0].status, r.checks[0].detail.clone())
    }

    #[test]
    fn skew_is_judged_by_size() {
        assert_eq!(judge(0).0, Status::Ok);
        assert_eq!(judge(3).0, Status::Ok);
        let (s, d) = judge(-40);
        assert_eq!(s, Status::Warn);
        assert_eq!(d, "the gateway's clock is 40 s behind ours");
        let (s, d) = judge(600);
        assert_eq!(s, Status::Fail);
        assert_eq!(d, "the gateway's clock is 600 s ahead of ours");
        let mut r = Report::default();
        clock(&mut r, None, SystemTime::now(), SystemTime::now());
        assert_eq!(r.checks[0].status, Status::Skip);
    }
}
