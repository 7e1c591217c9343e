//! `.drqueue-rules.toml` in the watched folder: which other files become
//! which job. Job files (`*.toml`, `*.json`) need no rule. Each rule is a
//! glob and the keys of a job file; in its strings `{file}` is the dropped
//! file's path (in `submitted/`, where it stays), `{stem}` its name without
//! the extension, and `{folder}` the watched folder:
//!
//! ```toml
//! [[rule]]
//! glob = "*.pov"
//! preset = "povray"
//! scene = "{file}"
//! output = "{folder}/renders/{stem}_####.png"
//! frames = "1"
//! ```
//!
//! The first rule whose glob matches wins. A file no rule matches is
//! rejected, with a message saying how to add one.

use drqueue_common::listing::glob_match;

pub const FILE_NAME: &str = ".drqueue-rules.toml";

#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<(String, toml::Table)>,
}

/// Where a dropped file's placeholders point.
pub struct Dropped<'a> {
    pub file: &'a str,
    pub stem: &'a str,
    pub folder: &'a str,
}

impl Rules {
    pub fn parse(text: &str) -> Result<Rules, String> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| format!("{FILE_NAME}: {}", e.message()))?;
        let list = match table.remove("rule") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a,
            Some(_) => {
                return Err(format!(
                    "{FILE_NAME}: `rule` must be an array of tables ([[rule]])"
                ))
            }
        };
        if let Some(key) = table.keys().next() {
            return Err(format!(
                "{FILE_NAME}: unknown key `{key}` (only [[rule]] tables)"
            ));
        }
        let mut rules = Vec::new();
        for (i, v) in list.into_iter().enumerate() {
            let toml::Value::Table(mut t) = v else {
                return Err(format!("{FILE_NAME}: rule[{i}] is not a table"));
            };
            let glob = match t.remove("glob") {
                Some(toml::Value::String(g)) if !g.is_empty() => g,
                _ => {
                    return Err(format!(
                    "{FILE_NAME}: rule[{i}] field `glob`: a pattern such as \"*.pov\" is required"
                ))
                }
            };
            rules.push((glob, t));
        }
        Ok(Rules { rules })
    }

    /// The job file text for a dropped file a rule matches, or None.
    pub fn job_for(&self, name: &str, dropped: &Dropped) -> Option<String> {
        let (_, table) = self.rules.iter().find(|(g, _)| glob_match(g, name))?;
        let mut job = table.clone();
        for (_, v) in job.iter_mut() {
            fill(v, dropped);
        }
        job.entry("name")
            .or_insert_with(|| toml::Value::String(dropped.stem.to_string()));
        Some(toml::to_string(&job).unwrap_or_default())
    }
}

fn fill(v: &mut toml::Value, d: &Dropped) {
    match v {
        toml::Value::String(s) => {
            *s = s
                .replace("{file}", d.file)
                .replace("{stem}", d.stem)
                .replace("{folder}", d.folder);
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|x| fill(x, d)),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, x)| fill(x, d)),
        _ => {}
    }
}

/// Job files: submitted as they are.
pub fn is_job_file(name: &str) -> bool {
    name.ends_with(".toml") || name.ends_with(".json")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "[[rule]]\nglob = \"*.pov\"\npreset = \"povray\"\nscene = \"{file}\"\noutput = \"{folder}/out/{stem}_####.png\"\nframes = \"1\"\n";

    #[test]
    fn a_rule_makes_a_job_file_with_the_placeholders_filled() {
        let rules = Rules::parse(RULES).unwrap();
        let d = Dropped {
            file: "/w/submitted/orbit.pov",
            stem: "orbit",
            folder: "/w",
        };
        let text = rules.job_for("orbit.pov", &d).unwrap();
        let job: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(job["scene"].as_str(), Some("/w/submitted/orbit.pov"));
        assert_eq!(job["output"].as_str(), Some("/w/out/orbit_####.png"));
        assert_eq!(job["name"].as_str(), Some("orbit"));
        assert!(rules.job_for("orbit.rib", &d).is_none());
        let g = drqueue_common::graph::parse("orbit.pov", &text, "watch", 0).unwrap();
        assert_eq!(g.jobs[0].spec.name, "orbit");
    }

    #[test]
    fn bad_rules_files_are_named() {
        assert!(Rules::parse("[[rule]]\npreset = \"povray\"\n")
            .unwrap_err()
            .contains("glob"));
        assert!(Rules::parse("rules = 1\n").unwrap_err().contains("rules"));
        assert!(Rules::parse("[[rule\n").is_err());
    }
}
