//! The size of everything in a job spec is bounded, and nothing in it holds
//! a NUL byte: a spec is echoed in listings, kept in every store and handed
//! to `execve`, so one request must not smuggle megabytes (or a string the
//! engine cannot run) into the farm. Each refusal names its field.

use crate::model::{JobSpec, SpecError};

/// The most bytes any one string of a spec may hold (`command` arguments,
/// `env` values), and all of `command`, `env` and `name` together.
pub const MAX_FIELD: usize = 64 * 1024;
/// A job's name: shown in every table.
pub const MAX_NAME: usize = 256;
/// The owner: a user name.
pub const MAX_OWNER: usize = crate::users::MAX_USER_NAME;
/// A frame set's text (`1-100x5,200`).
pub const MAX_FRAMES: usize = 4096;
/// A path (`cwd`) or an OS name.
pub const MAX_PATH: usize = 4096;
pub const MAX_COMMAND_ARGS: usize = 4096;
pub const MAX_ENV: usize = 1024;
/// Output files expected per frame (`--output`).
pub const MAX_OUTPUT_PATTERNS: usize = 16;
pub const MAX_LIMITS: usize = 64;
pub const MAX_AFTER: usize = 1024;
pub const MAX_NOTIFY: usize = 32;
pub const MAX_CAPABILITIES: usize = 64;

fn too_long(field: &'static str, len: usize, max: usize) -> Result<(), SpecError> {
    if len > max {
        return Err(SpecError::TooLong { field, len, max });
    }
    Ok(())
}

fn too_many(field: &'static str, count: usize, max: usize) -> Result<(), SpecError> {
    if count > max {
        return Err(SpecError::TooMany { field, count, max });
    }
    Ok(())
}

fn no_nul(field: &'static str, s: &str) -> Result<(), SpecError> {
    if s.contains('\0') {
        return Err(SpecError::Nul { field });
    }
    Ok(())
}

/// Checks every bound of `spec`; the first one broken is the error.
pub fn check(spec: &JobSpec) -> Result<(), SpecError> {
    too_long("name", spec.name.len(), MAX_NAME)?;
    no_nul("name", &spec.name)?;
    too_long("owner", spec.owner.len(), MAX_OWNER)?;
    no_nul("owner", &spec.owner)?;
    too_long("frames", spec.frames.len(), MAX_FRAMES)?;
    too_many("command", spec.command.len(), MAX_COMMAND_ARGS)?;
    for arg in &spec.command {
        too_long("command", arg.len(), MAX_FIELD)?;
        no_nul("command", arg)?;
    }
    too_many("env", spec.env.len(), MAX_ENV)?;
    for (k, v) in &spec.env {
        too_long("env", k.len() + v.len(), MAX_FIELD)?;
        no_nul("env", k)?;
        no_nul("env", v)?;
        if k.is_empty() || k.contains('=') {
            return Err(SpecError::BadName {
                field: "env",
                value: k.clone(),
            });
        }
    }
    if let Some(cwd) = &spec.cwd {
        too_long("cwd", cwd.len(), MAX_PATH)?;
        no_nul("cwd", cwd)?;
    }
    if let Some(os) = &spec.requirements.os {
        too_long("os", os.len(), MAX_PATH)?;
        no_nul("os", os)?;
    }
    too_many(
        "require",
        spec.requirements.capabilities.len(),
        MAX_CAPABILITIES,
    )?;
    for c in &spec.requirements.capabilities {
        too_long("require", c.len(), MAX_NAME)?;
        no_nul("require", c)?;
    }
    too_many("limits", spec.limits.len(), MAX_LIMITS)?;
    too_many("after", spec.after.len(), MAX_AFTER)?;
    too_many("notify", spec.notify.len(), MAX_NOTIFY)?;
    too_many("outputs", spec.outputs.len(), MAX_OUTPUT_PATTERNS)?;
    for o in &spec.outputs {
        too_long("outputs", o.len(), MAX_PATH)?;
        no_nul("outputs", o)?;
    }
    too_many("collect", spec.collect.len(), MAX_OUTPUT_PATTERNS)?;
    for c in &spec.collect {
        too_long("collect", c.len(), MAX_PATH)?;
        no_nul("collect", c)?;
        // A glob is a path with wildcards: the same rules keep it inside
        // the task's folder.
        crate::cas::check_path(c)
            .map_err(|why| SpecError::Collect(why.replace("unsafe manifest path", "glob")))?;
    }
    let total = spec.command.iter().map(String::len).sum::<usize>()
        + spec
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + spec.name.len();
    too_long("command, env and name together", total, MAX_FIELD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            command: vec!["true".into()],
            ..Default::default()
        }
    }

    #[test]
    fn each_bound_names_its_field() {
        let mut s = spec();
        s.name = "n".repeat(MAX_NAME + 1);
        assert_eq!(
            check(&s).unwrap_err().to_string(),
            format!("name is too long: 257 bytes, the limit is {MAX_NAME}")
        );
        let mut s = spec();
        s.limits = vec!["l".into(); MAX_LIMITS + 1];
        assert!(check(&s).unwrap_err().to_string().starts_with("limits:"));
        let mut s = spec();
        s.frames = "1,".repeat(MAX_FRAMES);
        assert!(check(&s).unwrap_err().to_string().contains("frames"));
        let mut s = spec();
        s.notify = vec!["a@b.c".into(); MAX_NOTIFY + 1];
        assert!(check(&s).unwrap_err().to_string().contains("notify"));
        assert!(check(&spec()).is_ok());
    }

    #[test]
    fn a_nul_byte_is_refused_where_it_stands() {
        let mut s = spec();
        s.command.push("a\0b".into());
        assert_eq!(check(&s), Err(SpecError::Nul { field: "command" }));
        let mut s = spec();
        s.env.insert("K".into(), "v\0".into());
        assert_eq!(check(&s), Err(SpecError::Nul { field: "env" }));
        let mut s = spec();
        s.cwd = Some("/tmp\0x".into());
        let e = check(&s).unwrap_err().to_string();
        assert!(e.contains("cwd") && e.contains("NUL"), "{e}");
    }
}
