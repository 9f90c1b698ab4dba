//! gateway.toml: parse (toml + serde) and validate, as `config::load` does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = virtgate_gateway::config::parse(text, Path::new("gateway.toml")) {
        let _ = virtgate_gateway::config::validate(&config);
        let _ = config.summary();
    }
});
