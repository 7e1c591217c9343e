//! The engine's identity: its id, kept in its state directory, and the
//! machine and path that directory belongs to.
//!
//! A state directory copied to another machine or path (a cloned disk image,
//! a copied home) would make two engines one to the master: they would steal
//! the identity from each other and mix their results. So the directory
//! records where it was made, and an engine started on a copy refuses, with
//! the way to enroll afresh.

use std::path::{Path, PathBuf};

const ID_FILE: &str = "engine-id";
const HOME_FILE: &str = "home";

/// Reads the engine's id from its state directory, creating one on first
/// start; refuses a directory that was made on another machine or path.
pub fn engine_id(state_dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(state_dir.join("logs")).map_err(|e| {
        anyhow::anyhow!("cannot create state directory {}: {e}", state_dir.display())
    })?;
    let here = Home::current(state_dir);
    let id_path = state_dir.join(ID_FILE);
    let home_path = state_dir.join(HOME_FILE);
    let existing = std::fs::read_to_string(&id_path)
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty());
    if let Some(id) = existing {
        match std::fs::read_to_string(&home_path).ok().and_then(|t| Home::parse(&t)) {
            Some(made) if made != here => return Err(crate::Permanent(format!(
                "state directory {dir} was made for engine {id} on machine {} at {}; it was copied here ({} at {}). \
                 Two engines must not share an identity: to enroll this one as a new engine, start it with a new \
                 --state-dir, or remove {id_file} and {home_file} from this one",
                made.machine,
                made.path.display(),
                here.machine,
                here.path.display(),
                dir = state_dir.display(),
                id_file = id_path.display(),
                home_file = home_path.display(),
            ))
            .into()),
            Some(_) => return Ok(id),
            // Made before homes were recorded: this is its home from now on.
            None => {
                write(&home_path, &here.render())?;
                return Ok(id);
            }
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    write(&home_path, &here.render())?;
    write(&id_path, &id)?;
    Ok(id)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Where a state directory lives: the machine's id and its own full path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Home {
    machine: String,
    path: PathBuf,
}

impl Home {
    fn current(state_dir: &Path) -> Home {
        let machine = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
            .iter()
            .find_map(|f| {
                std::fs::read_to_string(f)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(drqueue_common::hostname);
        let path = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        Home { machine, path }
    }

    fn render(&self) -> String {
        format!("machine={}\npath={}\n", self.machine, self.path.display())
    }

    fn parse(text: &str) -> Option<Home> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        Some(Home {
            machine: field("machine")?,
            path: PathBuf::from(field("path")?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("drqueue-identity-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_id_is_kept_across_starts() {
        let d = tmp("kept");
        let first = engine_id(&d).unwrap();
        assert_eq!(engine_id(&d).unwrap(), first);
    }

    #[test]
    fn a_copy_at_another_path_is_refused_with_the_way_out() {
        let d = tmp("orig");
        let id = engine_id(&d).unwrap();
        let copy = tmp("copy");
        std::fs::create_dir_all(&copy).unwrap();
        for f in [ID_FILE, HOME_FILE] {
            std::fs::copy(d.join(f), copy.join(f)).unwrap();
        }
        let err = engine_id(&copy).unwrap_err().to_string();
        assert!(err.contains(&id) && err.contains("--state-dir"), "{err}");
    }

    #[test]
    fn a_copy_from_another_machine_is_refused() {
        let d = tmp("machine");
        engine_id(&d).unwrap();
        let home = std::fs::read_to_string(d.join(HOME_FILE)).unwrap();
        let other: String = home
            .lines()
            .map(|l| {
                if l.starts_with("machine=") {
                    "machine=another-machine".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(d.join(HOME_FILE), other).unwrap();
        let err = engine_id(&d).unwrap_err().to_string();
        assert!(err.contains("another-machine"), "{err}");
    }

    #[test]
    fn an_older_directory_without_a_home_is_adopted() {
        let d = tmp("old");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(ID_FILE), "old-id").unwrap();
        assert_eq!(engine_id(&d).unwrap(), "old-id");
        assert!(d.join(HOME_FILE).exists());
    }
}
