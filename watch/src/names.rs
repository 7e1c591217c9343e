//! Which file names the watcher takes. Sync tools write under temporary
//! names and rename when done: rsync `.NAME.XXXXXX`, Syncthing
//! `.syncthing.NAME.tmp` (`~syncthing~NAME.tmp` on Windows), browsers and
//! others `NAME.part`, `NAME.crdownload`, `NAME.tmp`, editors `NAME~` and
//! `.NAME.swp`. Hidden files (our own `.drqueue-*` among them) are never
//! taken.

pub fn is_candidate(name: &str) -> bool {
    const TEMP_SUFFIXES: &[&str] = &[
        ".part",
        ".partial",
        ".crdownload",
        ".tmp",
        ".temp",
        ".swp",
        ".!sync",
        "~",
    ];
    !name.is_empty()
        && !name.starts_with('.')
        && !name.starts_with("~syncthing~")
        && !TEMP_SUFFIXES.iter().any(|s| name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::is_candidate;

    #[test]
    fn temporaries_and_hidden_files_are_skipped() {
        for name in [
            ".shot.toml.Xa12b9",
            ".syncthing.shot.toml.tmp",
            "~syncthing~shot.toml.tmp",
            "shot.toml.part",
            "shot.toml~",
            ".drqueue-rules.toml",
            "a.crdownload",
        ] {
            assert!(!is_candidate(name), "{name}");
        }
        for name in ["shot.toml", "scene.pov", "graph.json"] {
            assert!(is_candidate(name), "{name}");
        }
    }
}
