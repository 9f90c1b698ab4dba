//! The client's profile file (profiles.toml), then selecting a profile by name.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use virtgate_client::profile::Profiles;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Profiles::parse(
        Path::new("profiles.toml"),
        text,
        Some(Path::new("/home/fuzz")),
    ) {
        let _ = p.select(None, false);
        let _ = p.select(Some("default"), true);
    }
});
