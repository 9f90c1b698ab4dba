//! Authorization: identity × domain × action → [`Decision`]. Pure: no I/O, no clock.
//!
//! A [`Policy`] is the list of `[[rule]]`s. Each rule grants one [`Role`] to some identities
//! (`who`: user names, `group:NAME`, principals, `*`) on some domains (glob patterns). The
//! role an identity holds on a domain is the highest role of all rules that match both;
//! no matching rule means no role at all, and the API then reports the domain as not found,
//! so the names of other people's domains do not leak. Each [`Action`] needs a minimum role:
//!
//! | role | may |
//! |---|---|
//! | `viewer` | list, info, screenshot, events, read-only libvirt RPC |
//! | `operator` | + start, shutdown, reboot, destroy, VNC, serial console |
//! | `admin` | + read-write libvirt RPC |
//!
//! Domain-less actions: libvirt RPC (both `/v1/libvirt` and `?ro`) is not filtered per domain
//! (libvirtd answers for every domain), so it needs the role on *every* domain: a rule whose
//! `domains` contain `*` ([`Policy::global_role`]); `viewer` on `web*` alone would leak the
//! names of the other domains. The event stream is filtered per domain, so it opens for any
//! identity holding some role anywhere ([`Policy::any_role`]) and shows only the domains it
//! may view.

use virtgate_proto::Action as LifecycleAction;

use crate::authn::Identity;
use crate::config;

pub use crate::config::Role;

/// Something an identity asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// See the domain in `GET /v1/domains`.
    List,
    /// `GET /v1/domains/{name}`.
    Info,
    /// `GET /v1/domains/{name}/screenshot`.
    Screenshot,
    /// `GET /v1/events` (filtered per domain).
    Events,
    /// VNC tunnel.
    Vnc,
    /// Serial console tunnel.
    Serial,
    /// SPICE tunnel (one per SPICE channel).
    Spice,
    /// start, shutdown, reboot, destroy.
    Lifecycle(LifecycleAction),
    /// Read-write libvirt RPC: reaches every domain, so it needs admin on `*`.
    LibvirtRw,
    /// Read-only libvirt RPC: shows every domain, so it needs viewer on `*`.
    LibvirtRo,
}

impl Action {
    /// The least role that allows this action.
    pub fn required_role(self) -> Role {
        match self {
            Action::List
            | Action::Info
            | Action::Screenshot
            | Action::Events
            | Action::LibvirtRo => Role::Viewer,
            Action::Vnc | Action::Serial | Action::Spice | Action::Lifecycle(_) => Role::Operator,
            Action::LibvirtRw => Role::Admin,
        }
    }

    /// Name for logs and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Info => "info",
            Action::Screenshot => "screenshot",
            Action::Events => "events",
            Action::Vnc => "vnc",
            Action::Serial => "serial",
            Action::Spice => "spice",
            Action::Lifecycle(op) => op.as_str(),
            Action::LibvirtRw => "libvirt",
            Action::LibvirtRo => "libvirt_ro",
        }
    }
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the action may go ahead.
    pub allowed: bool,
    /// The role the identity holds on the domain, if any: `None` means the domain is invisible
    /// to it (report "not found"); `Some` with `allowed == false` means "forbidden".
    pub role: Option<Role>,
    /// The role the action needs, for the 403 message.
    pub required: Role,
}

/// One compiled `[[rule]]`.
#[derive(Debug, Clone)]
struct Rule {
    /// Identities it applies to (see [`Who`]).
    who: Vec<Who>,
    /// Domain globs.
    domains: Vec<String>,
    /// The role it grants.
    role: Role,
}

/// One entry of a rule's `who`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    /// `*`: any authenticated identity.
    Anyone,
    /// `group:NAME`: identities whose groups contain NAME.
    Group(String),
    /// A name with `@`: matched against the full principal (Kerberos), and the user name.
    Principal(String),
    /// A plain user name.
    User(String),
}

impl Who {
    fn parse(s: &str) -> Who {
        if s == "*" {
            Who::Anyone
        } else if let Some(g) = s.strip_prefix("group:") {
            Who::Group(g.to_owned())
        } else if s.contains('@') {
            Who::Principal(s.to_owned())
        } else {
            Who::User(s.to_owned())
        }
    }

    fn matches(&self, id: &Identity) -> bool {
        match self {
            Who::Anyone => true,
            Who::Group(g) => id.groups.iter().any(|x| x == g),
            Who::Principal(p) => id.principal.as_deref() == Some(p.as_str()) || id.user == *p,
            Who::User(u) => id.user == *u,
        }
    }
}

/// The rule set of a configuration, ready to answer questions.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Rules in file order (order does not matter: the highest role wins).
    rules: Vec<Rule>,
}

impl Policy {
    /// Compile the `[[rule]]` tables.
    pub fn new(rules: &[config::Rule]) -> Policy {
        Policy {
            rules: rules
                .iter()
                .map(|r| Rule {
                    who: r.who.iter().map(|w| Who::parse(w)).collect(),
                    domains: r.domains.clone(),
                    role: r.role,
                })
                .collect(),
        }
    }

    /// The highest role `id` holds on `domain`, or `None` when no rule grants it anything.
    pub fn role_on(&self, id: &Identity, domain: &str) -> Option<Role> {
        self.rules
            .iter()
            .filter(|r| r.who.iter().any(|w| w.matches(id)))
            .filter(|r| r.domains.iter().any(|g| glob_match::glob_match(g, domain)))
            .map(|r| r.role)
            .max()
    }

    /// The highest role `id` holds on every domain at once (rules whose domains include `*`):
    /// what domain-less actions such as libvirt RPC need, since they reach every domain.
    pub fn global_role(&self, id: &Identity) -> Option<Role> {
        self.rules
            .iter()
            .filter(|r| r.who.iter().any(|w| w.matches(id)))
            .filter(|r| r.domains.iter().any(|g| g == "*"))
            .map(|r| r.role)
            .max()
    }

    /// The highest role `id` holds on any domain at all (any rule naming it): what the event
    /// stream needs to open; each event is then filtered with [`Policy::role_on`].
    pub fn any_role(&self, id: &Identity) -> Option<Role> {
        self.rules
            .iter()
            .filter(|r| r.who.iter().any(|w| w.matches(id)))
            .map(|r| r.role)
            .max()
    }

    /// May `id` do `action` on `domain` (`None` for domain-less actions)?
    pub fn decide(&self, id: &Identity, domain: Option<&str>, action: Action) -> Decision {
        let role = match domain {
            Some(d) => self.role_on(id, d),
            None => self.global_role(id),
        };
        let required = action.required_role();
        Decision {
            allowed: role.is_some_and(|r| r >= required),
            role,
            required,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtgate_proto::AuthMethod;

    fn id(user: &str, groups: &[&str], principal: Option<&str>) -> Identity {
        Identity {
            user: user.into(),
            method: AuthMethod::Certificate,
            principal: principal.map(Into::into),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            peer: None,
        }
    }

    fn rule(who: &[&str], domains: &[&str], role: Role) -> config::Rule {
        config::Rule {
            who: who.iter().map(|s| s.to_string()).collect(),
            domains: domains.iter().map(|s| s.to_string()).collect(),
            role,
        }
    }

    fn policy() -> Policy {
        Policy::new(&[
            rule(
                &["alice", "group:wheel", "bob@EXAMPLE.ORG"],
                &["web*"],
                Role::Operator,
            ),
            rule(&["alice"], &["web1"], Role::Viewer),
            rule(&["carol"], &["*"], Role::Admin),
            rule(&["dave"], &["db?", "cache"], Role::Viewer),
        ])
    }

    #[test]
    fn default_deny_and_highest_role_wins() {
        let p = policy();
        let alice = id("alice", &[], None);
        assert_eq!(p.role_on(&alice, "web1"), Some(Role::Operator));
        assert_eq!(p.role_on(&alice, "db1"), None);
        assert_eq!(p.role_on(&id("mallory", &[], None), "web1"), None);
        assert_eq!(
            p.role_on(&id("x", &["wheel"], None), "web7"),
            Some(Role::Operator)
        );
        assert_eq!(
            p.role_on(&id("bob", &[], Some("bob@EXAMPLE.ORG")), "web2"),
            Some(Role::Operator)
        );
        assert_eq!(p.role_on(&id("bob", &[], Some("CN=bob")), "web2"), None);
        assert_eq!(p.role_on(&id("dave", &[], None), "db2"), Some(Role::Viewer));
        assert_eq!(p.role_on(&id("dave", &[], None), "db22"), None);
        assert_eq!(
            p.role_on(&id("dave", &[], None), "cache"),
            Some(Role::Viewer)
        );
    }

    #[test]
    fn kerberos_identities_match_by_user_or_full_principal() {
        let p = Policy::new(&[
            rule(&["alice"], &["web*"], Role::Viewer),
            rule(&["alice@EXAMPLE.ORG"], &["db*"], Role::Viewer),
        ]);
        let kerberos = |user: &str, principal: &str| Identity {
            method: AuthMethod::Kerberos,
            ..id(user, &[], Some(principal))
        };
        // strip_realm lists EXAMPLE.ORG: user `alice`, principal `alice@EXAMPLE.ORG`.
        let stripped = kerberos("alice", "alice@EXAMPLE.ORG");
        assert_eq!(p.role_on(&stripped, "web1"), Some(Role::Viewer));
        assert_eq!(p.role_on(&stripped, "db1"), Some(Role::Viewer));
        // Another realm keeps its realm in the user name: only the exact principal matches.
        let foreign = kerberos("alice@OTHER.ORG", "alice@OTHER.ORG");
        assert_eq!(p.role_on(&foreign, "web1"), None);
        assert_eq!(p.role_on(&foreign, "db1"), None);
        let unstripped = kerberos("alice@EXAMPLE.ORG", "alice@EXAMPLE.ORG");
        assert_eq!(p.role_on(&unstripped, "db1"), Some(Role::Viewer));
        assert_eq!(p.role_on(&unstripped, "web1"), None);
    }

    #[test]
    fn action_matrix() {
        use Action::*;
        let actions = [
            List,
            Info,
            Screenshot,
            Events,
            Vnc,
            Serial,
            Lifecycle(LifecycleAction::Start),
            Lifecycle(LifecycleAction::Shutdown),
            Lifecycle(LifecycleAction::Reboot),
            Lifecycle(LifecycleAction::Destroy),
            LibvirtRo,
            LibvirtRw,
        ];
        // role held → actions allowed
        let expect = |role: Option<Role>, a: Action| match role {
            None => false,
            Some(Role::Viewer) => matches!(a, List | Info | Screenshot | Events | LibvirtRo),
            Some(Role::Operator) => !matches!(a, LibvirtRw),
            Some(Role::Admin) => true,
        };
        for (role, user) in [
            (None, "nobody"),
            (Some(Role::Viewer), "v"),
            (Some(Role::Operator), "o"),
            (Some(Role::Admin), "a"),
        ] {
            let p = Policy::new(&match role {
                Some(r) => vec![rule(&[user], &["*"], r)],
                None => vec![],
            });
            for a in actions {
                let d = p.decide(&id(user, &[], None), Some("anything"), a);
                assert_eq!(d.allowed, expect(role, a), "{user} {a:?}");
                assert_eq!(d.role, role);
                assert_eq!(d.required, a.required_role());
                let g = p.decide(&id(user, &[], None), None, a);
                assert_eq!(g.allowed, expect(role, a), "global {user} {a:?}");
            }
        }
    }

    #[test]
    fn global_role_needs_a_star_rule() {
        let p = policy();
        assert_eq!(p.global_role(&id("alice", &[], None)), None);
        assert_eq!(p.global_role(&id("carol", &[], None)), Some(Role::Admin));
        let d = p.decide(&id("alice", &[], None), None, Action::LibvirtRo);
        assert!(!d.allowed && d.role.is_none());
    }

    #[test]
    fn any_role_ignores_domains_and_lifecycle_actions_have_audit_names() {
        let p = policy();
        assert_eq!(p.any_role(&id("dave", &[], None)), Some(Role::Viewer));
        assert_eq!(p.any_role(&id("alice", &[], None)), Some(Role::Operator));
        assert_eq!(p.any_role(&id("x", &["wheel"], None)), Some(Role::Operator));
        assert_eq!(p.any_role(&id("mallory", &["users"], None)), None);
        let names: Vec<_> = [
            LifecycleAction::Start,
            LifecycleAction::Shutdown,
            LifecycleAction::Reboot,
            LifecycleAction::Destroy,
        ]
        .map(|a| Action::Lifecycle(a).as_str())
        .into();
        assert_eq!(names, ["start", "shutdown", "reboot", "destroy"]);
        // An operator on web* may shut web1 down; a viewer may not.
        let d = p.decide(
            &id("dave", &[], None),
            Some("db1"),
            Action::Lifecycle(LifecycleAction::Shutdown),
        );
        assert!(!d.allowed);
        assert_eq!((d.role, d.required), (Some(Role::Viewer), Role::Operator));
    }

    #[test]
    fn anyone_matches_every_identity() {
        let p = Policy::new(&[rule(&["*"], &["pub*"], Role::Viewer)]);
        assert_eq!(
            p.role_on(&id("zed", &[], None), "public"),
            Some(Role::Viewer)
        );
        let d = p.decide(&id("zed", &[], None), Some("public"), Action::Vnc);
        assert!(!d.allowed);
        assert_eq!((d.role, d.required), (Some(Role::Viewer), Role::Operator));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }
}
