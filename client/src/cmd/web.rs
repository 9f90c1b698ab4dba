//! `virtgate web [DOMAIN] [--serial] [--print]`: open the gateway's browser console, logged
//! in as you.
//!
//! The command asks the gateway for a one-time ticket (`POST /v1/web/ticket`) over its own
//! session, whatever carries it (certificate, Kerberos, the shared connection of
//! `virtgate up`), and builds `https://HOST:PORT/ui/login?ticket=T&next=/ui/vnc/DOMAIN`
//! (`/ui/serial/DOMAIN` with `--serial`, the domain list `/ui/` without a domain). The
//! browser trades the ticket for a session cookie. The link is printed on stdout, and opened
//! with `$BROWSER` (or `xdg-open`) unless `--print`; when no opener runs, printing it is all.
//!
//! Behind an SSH or unix-socket URL the browser cannot reach the gateway's port: the
//! command serves the pages locally instead ([`weblocal`](super::weblocal)), until Ctrl-C.

use std::process::{Command as Process, Stdio};

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use virtgate_proto::{ApiPath, WebTicket};

use super::print;
use crate::error::Error;
use crate::session::Session;
use crate::url::GatewayUrl;

/// What page to land on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// The domain list.
    List,
    /// A domain's VNC console (noVNC).
    Vnc(String),
    /// A domain's serial console (xterm.js).
    Serial(String),
}

impl Page {
    /// From the command line: a domain (VNC, or serial with `--serial`) or the list.
    pub fn of(domain: Option<String>, serial: bool) -> Page {
        match domain {
            None => Page::List,
            Some(d) if serial => Page::Serial(d),
            Some(d) => Page::Vnc(d),
        }
    }

    /// The page's path (domain names percent-encoded).
    pub fn path(&self) -> String {
        let enc = |d: &str| utf8_percent_encode(d, NON_ALPHANUMERIC).to_string();
        match self {
            Page::List => "/ui/".into(),
            Page::Vnc(d) => format!("/ui/vnc/{}", enc(d)),
            Page::Serial(d) => format!("/ui/serial/{}", enc(d)),
        }
    }
}

/// The login link for `ticket` on the gateway at `url`, landing on `page`.
pub fn login_url(url: &GatewayUrl, ticket: &WebTicket, page: &Page) -> Result<String, Error> {
    let GatewayUrl::Tls { host, port } = url else {
        return Err(Error::Unsupported {
            what: format!(
                "opening the browser console through the {} transport ({url})",
                url.transport_name()
            ),
            hint: "the browser must reach the gateway's TLS port itself: run `virtgate --url virtgate://HOST[:PORT] web` (with a certificate or Kerberos), or open https://HOST:PORT/ui/ with your certificate imported in the browser (`virtgate-pki export-p12`)".into(),
        });
    };
    let next = utf8_percent_encode(&page.path(), NON_ALPHANUMERIC).to_string();
    Ok(format!(
        "https://{host}:{port}{}&next={next}",
        ticket.login_path
    ))
}

/// Ask for a ticket, print the link, and open it unless `print_only`.
pub async fn run(
    session: &Session,
    url: &GatewayUrl,
    page: &Page,
    print_only: bool,
) -> Result<(), Error> {
    // the browser cannot reach a gateway behind SSH or a unix socket: serve its pages here
    if !matches!(url, GatewayUrl::Tls { .. }) {
        return super::weblocal::run(session.clone(), page, print_only).await;
    }
    let ticket: WebTicket = session.post_empty(&ApiPath::WebTicket).await?;
    let link = login_url(url, &ticket, page)?;
    print(&format!("{link}\n"))?;
    if print_only {
        return Ok(());
    }
    let note = format!(
        "the link works once, within {} s; a used or expired one needs `virtgate web` again",
        ticket.expires_in_s
    );
    match open(&link) {
        Ok(opener) => eprintln!("opened with {opener}; {note}"),
        Err(why) => eprintln!("{why}: open the link above in your browser; {note}"),
    }
    Ok(())
}

/// Start `$BROWSER` (its first word is the program, `%s` is the link, else the link is
/// appended), else `xdg-open`; the browser keeps running on its own. The opener's name, or
/// why none ran.
pub fn open(link: &str) -> Result<String, String> {
    let (program, args) = match std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
    {
        Some(b) => {
            // $BROWSER may list alternatives separated by `:`; the first is used
            let first = b.split(':').next().unwrap_or_default().to_owned();
            let mut words: Vec<String> = first.split_whitespace().map(str::to_owned).collect();
            if words.is_empty() {
                return Err("$BROWSER is empty".into());
            }
            let program = words.remove(0);
            if words.iter().any(|w| w.contains("%s")) {
                words = words.iter().map(|w| w.replace("%s", link)).collect();
            } else {
                words.push(link.to_owned());
            }
            (program, words)
        }
        None => ("xdg-open".to_owned(), vec![link.to_owned()]),
    };
    Process::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| program.clone())
        .map_err(|e| format!("cannot start {program} ({e}; set $BROWSER)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> WebTicket {
        WebTicket {
            ticket: "T".into(),
            expires_in_s: 60,
            login_path: "/ui/login?ticket=T".into(),
        }
    }

    #[test]
    fn links_name_the_page() {
        let url = GatewayUrl::parse("virtgate://gw.example:8443").unwrap();
        let l = login_url(&url, &ticket(), &Page::of(Some("web 1".into()), false)).unwrap();
        assert_eq!(
            l,
            "https://gw.example:8443/ui/login?ticket=T&next=%2Fui%2Fvnc%2Fweb%25201"
        );
        let l = login_url(&url, &ticket(), &Page::of(Some("w".into()), true)).unwrap();
        assert!(l.ends_with("&next=%2Fui%2Fserial%2Fw"), "{l}");
        let l = login_url(&url, &ticket(), &Page::of(None, true)).unwrap();
        assert!(l.ends_with("&next=%2Fui%2F"), "{l}");
    }

    #[test]
    fn ssh_and_unix_urls_are_refused_with_a_hint() {
        for u in [
            "virtgate+ssh://me@host",
            "virtgate+unix:///run/virtgate.sock",
        ] {
            let url = GatewayUrl::parse(u).unwrap();
            let e = login_url(&url, &ticket(), &Page::List).unwrap_err();
            assert!(e.to_string().contains("not supported yet"), "{e}");
            assert!(e.hint().unwrap().contains("virtgate://HOST"), "{e}");
        }
    }
}
