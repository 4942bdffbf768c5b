//! Reference differ plugin: the `fota-delta` codec (bsdiff matches, separated streams, LZMA)
//! inside the engine's delta envelope, so a patch is refused on the wrong base and its result
//! is checked against the new image's sha256. Takes no settings.

wit_bindgen::generate!({ world: "differ", path: "../../wit" });

use exports::fota::plugin::{config, delta};

struct Bsdiff;

impl config::Guest for Bsdiff {
    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        match settings.first() {
            None => Ok(()),
            Some((key, _)) => Err(format!("unknown setting {key:?}: bsdiff-lzma takes none")),
        }
    }
}

impl delta::Guest for Bsdiff {
    fn name() -> String {
        "bsdiff-lzma".into()
    }

    fn make_patch(old: Vec<u8>, new: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(fota_delta::make_patch(&old, &new))
    }

    fn apply_patch(old: Vec<u8>, patch: Vec<u8>) -> Result<Vec<u8>, String> {
        fota_delta::apply_patch(&old, &patch).map_err(|e| e.to_string())
    }
}

export!(Bsdiff);
