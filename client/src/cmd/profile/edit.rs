//! The config file as a document to edit (toml_edit): profiles added, replaced or
//! removed, and `default` set, while the user's comments, layout and other profiles stay
//! as they were. Pure: text in, text out; [`super`] reads and writes the file.
//!
//! Every text this produces is parsed again as [`Profiles`] before it may be written, so
//! an edit can never leave a config file the client would refuse.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table};

use crate::error::{Error, SetupFailure};
use crate::profile::Profiles;

/// The top-level table of profiles.
const PROFILE: &str = "profile";
/// The top-level key naming the default profile.
const DEFAULT: &str = "default";

/// A config file being edited.
#[derive(Debug, Clone)]
pub struct ConfigDoc {
    /// The file, for messages and the final check.
    path: PathBuf,
    /// Its contents with their formatting.
    doc: DocumentMut,
}

impl ConfigDoc {
    /// Reads config text (empty for a file that does not exist yet). Text the client
    /// itself would refuse is refused here too, with the same line and column.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigDoc, Error> {
        Profiles::parse(path, text, None)?;
        let doc = text
            .parse::<DocumentMut>()
            .map_err(|e| SetupFailure::ConfigShape {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        Ok(ConfigDoc {
            path: path.to_owned(),
            doc,
        })
    }

    /// The profiles' names, in the file's order.
    pub fn profile_names(&self) -> Vec<String> {
        self.doc
            .get(PROFILE)
            .and_then(Item::as_table_like)
            .map(|t| t.iter().map(|(k, _)| k.to_owned()).collect())
            .unwrap_or_default()
    }

    /// Whether a profile of that name exists.
    pub fn has_profile(&self, name: &str) -> bool {
        self.profile_names().iter().any(|n| n == name)
    }

    /// The `default` profile, when set.
    pub fn default(&self) -> Option<String> {
        self.doc.get(DEFAULT)?.as_str().map(str::to_owned)
    }

    /// Sets `default = "name"` (at the top, with the other top-level keys).
    pub fn set_default(&mut self, name: &str) {
        match self.doc.get_mut(DEFAULT).and_then(Item::as_value_mut) {
            // keep the comment after the value, if any
            Some(v) => {
                let decor = v.decor().clone();
                *v = toml_edit::Value::from(name);
                *v.decor_mut() = decor;
            }
            None => {
                self.doc.insert(DEFAULT, toml_edit::value(name));
            }
        }
    }

    /// Writes `[profile.NAME]` with `keys` in that order. An existing profile of that
    /// name keeps its place and the comment above it; its keys are replaced.
    pub fn put_profile(&mut self, name: &str, keys: &[(&str, String)]) -> Result<(), Error> {
        let path = self.path.clone();
        let shape = |detail: String| SetupFailure::ConfigShape {
            path: path.clone(),
            detail,
        };
        let profiles = self.doc.entry(PROFILE).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        let Some(profiles) = profiles.as_table_mut() else {
            return Err(shape(
                "`profile` is not a table of [profile.NAME] tables (an inline table?)".into(),
            )
            .into());
        };
        match profiles.get_mut(name) {
            Some(Item::Table(table)) => {
                table.clear();
                fill(table, keys);
            }
            Some(_) => {
                return Err(shape(format!(
                "profile `{name}` is written as an inline table; make it a [profile.{name}] table"
            ))
                .into())
            }
            None => {
                let mut table = Table::new();
                fill(&mut table, keys);
                profiles.insert(name, Item::Table(table));
            }
        }
        Ok(())
    }

    /// Removes `[profile.NAME]`; a `default` naming it goes too. Returns whether the
    /// profile existed and whether `default` was removed.
    pub fn remove_profile(&mut self, name: &str) -> (bool, bool) {
        let removed = self
            .doc
            .get_mut(PROFILE)
            .and_then(Item::as_table_like_mut)
            .and_then(|t| t.remove(name))
            .is_some();
        let was_default = removed && self.default().as_deref() == Some(name);
        if was_default {
            self.doc.remove(DEFAULT);
        }
        (removed, was_default)
    }

    /// The edited text, checked to be a config the client reads.
    pub fn text(&self) -> Result<String, Error> {
        let text = self.doc.to_string();
        Profiles::parse(&self.path, &text, None)?;
        Ok(text)
    }
}

/// Puts `keys` into `table`, in order.
fn fill(table: &mut Table, keys: &[(&str, String)]) {
    for (k, v) in keys {
        table.insert(k, toml_edit::value(v.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_FILE: &str = "\
# my gateways; keep this comment
default = \"lab\"   # the one at work

[profile.lab]
url = \"virtgate://lab.example.org\"   # the lab
ca = \"lab/ca.pem\"
keepalive_interval_s = 3

# home server
[profile.home]
url = \"virtgate+ssh://me@home\"
";

    fn doc(text: &str) -> ConfigDoc {
        ConfigDoc::parse(Path::new("/c/config.toml"), text).unwrap()
    }

    fn keys(url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("url", url.to_owned()),
            ("ca", "hv1/ca.pem".to_owned()),
            ("cert", "hv1/bob.pem".to_owned()),
            ("key", "bob.key".to_owned()),
        ]
    }

    #[test]
    fn adding_keeps_comments_and_other_profiles() {
        let mut d = doc(USER_FILE);
        assert_eq!(d.profile_names(), ["lab", "home"]);
        d.put_profile("hv1", &keys("virtgate://hv1")).unwrap();
        let text = d.text().unwrap();
        assert!(text.starts_with(USER_FILE), "{text}");
        assert!(
            text.ends_with(
                "\n[profile.hv1]\nurl = \"virtgate://hv1\"\nca = \"hv1/ca.pem\"\n\
                 cert = \"hv1/bob.pem\"\nkey = \"bob.key\"\n"
            ),
            "{text}"
        );
        let p = Profiles::parse(Path::new("/c/config.toml"), &text, None).unwrap();
        assert_eq!(
            p.profiles["hv1"].key.as_deref(),
            Some(Path::new("/c/bob.key"))
        );
        assert_eq!(p.default.as_deref(), Some("lab"));
    }

    #[test]
    fn default_is_set_in_place_or_at_the_top() {
        let mut d = doc(USER_FILE);
        d.put_profile("hv1", &keys("virtgate://hv1")).unwrap();
        d.set_default("hv1");
        let text = d.text().unwrap();
        assert!(
            text.contains("default = \"hv1\"   # the one at work\n"),
            "{text}"
        );
        let mut empty = doc("");
        empty.put_profile("hv1", &keys("virtgate://hv1")).unwrap();
        empty.set_default("hv1");
        let text = empty.text().unwrap();
        assert!(text.starts_with("default = \"hv1\"\n"), "{text}");
        assert!(text.contains("[profile.hv1]\n"), "{text}");
        assert!(!text.contains("[profile]\n"), "{text}");
    }

    #[test]
    fn replacing_keeps_the_place_and_the_comment_above() {
        let mut d = doc(USER_FILE);
        d.put_profile("lab", &keys("virtgate://lab2")).unwrap();
        let text = d.text().unwrap();
        let lab = text.find("[profile.lab]").unwrap();
        let home = text.find("# home server\n[profile.home]").unwrap();
        assert!(lab < home, "{text}");
        assert!(
            text.contains("[profile.lab]\nurl = \"virtgate://lab2\"\n"),
            "{text}"
        );
        assert!(!text.contains("keepalive_interval_s"), "{text}");
    }

    #[test]
    fn removing_takes_the_default_along() {
        let mut d = doc(USER_FILE);
        assert_eq!(d.remove_profile("lab"), (true, true));
        let text = d.text().unwrap();
        assert!(
            !text.contains("default") && !text.contains("profile.lab"),
            "{text}"
        );
        assert!(text.contains("# home server\n[profile.home]"), "{text}");
        assert_eq!(d.remove_profile("nope"), (false, false));
        let mut d = doc(USER_FILE);
        assert_eq!(d.remove_profile("home"), (true, false));
        assert_eq!(d.default().as_deref(), Some("lab"));
    }

    #[test]
    fn a_file_the_client_refuses_is_not_edited() {
        let e = ConfigDoc::parse(
            Path::new("/c/config.toml"),
            "[profile.a]\nurl = \"x\"\ncetr = 1\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains(":3:1: unknown field `cetr`"), "{e}");
        let mut d = doc("[profile]\nhome = { url = \"virtgate://h\" }\n");
        let e = d.put_profile("home", &keys("virtgate://x")).unwrap_err();
        assert!(e.to_string().contains("inline table"), "{e}");
    }
}
