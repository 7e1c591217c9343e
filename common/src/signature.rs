//! A failure's signature: what two failures must share to be "the same
//! failure". It is the way the attempt ended (exit code, signal, timeout, or
//! could not start) and the last non-empty line of its log, with numbers and
//! paths masked, so that `frame 12: cannot open /proj/a/12.exr` and
//! `frame 13: cannot open /proj/b/13.exr` read alike.
//!
//! The scheduler uses it to tell the job's fault from the engine's; later
//! rules (fatal errors, stalls) reuse it.

use crate::protocol::Outcome;

/// Lines are cut to this many characters before masking.
const MAX_LINE: usize = 200;

/// The signature of a failed attempt whose log ended with `last_line`.
pub fn failure_signature(outcome: &Outcome, last_line: &str) -> String {
    let how = if outcome.error.is_some() {
        "could not run".to_string()
    } else if outcome.timed_out {
        "timed out".to_string()
    } else if let Some(s) = outcome.signal {
        format!("signal {s}")
    } else {
        match outcome.exit_code {
            Some(c) => format!("exit {c}"),
            None => "ended".to_string(),
        }
    };
    // A spawn error has no output: its own message is the line.
    let line = match &outcome.error {
        Some(e) => e.as_str(),
        None => last_line,
    };
    let masked = mask(line);
    if masked.is_empty() {
        how
    } else {
        format!("{how}: {masked}")
    }
}

/// Numbers become `#`, paths `<path>`, runs of spaces one space.
pub fn mask(line: &str) -> String {
    let line: String = line.trim().chars().take(MAX_LINE).collect();
    let mut out = Vec::new();
    for word in line.split_whitespace() {
        let bare = word.trim_matches(|c: char| "\"'`()[]{}<>,;:".contains(c));
        if bare.contains('/') || bare.contains('\\') {
            out.push(word.replace(bare, "<path>"));
            continue;
        }
        let mut w = String::with_capacity(word.len());
        let mut in_number = false;
        for c in word.chars() {
            if c.is_ascii_digit() {
                if !in_number {
                    w.push('#');
                }
                in_number = true;
            } else {
                in_number = false;
                w.push(c);
            }
        }
        out.push(w);
    }
    out.join(" ")
}

/// The last non-empty line of a log's tail.
pub fn last_line(tail: &[u8]) -> String {
    String::from_utf8_lossy(tail)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> Outcome {
        Outcome {
            exit_code: Some(code),
            ..Outcome::default()
        }
    }

    #[test]
    fn numbers_and_paths_are_masked() {
        let a = failure_signature(&exit(1), "frame 12: cannot open /proj/a/12.exr");
        let b = failure_signature(&exit(1), "frame 13: cannot open /proj/b/0013.exr");
        assert_eq!(a, b);
        assert_eq!(a, "exit 1: frame #: cannot open <path>");
    }

    #[test]
    fn how_it_ended_is_part_of_it() {
        let line = "Segmentation fault";
        assert_ne!(
            failure_signature(&exit(1), line),
            failure_signature(&exit(139), line)
        );
        let killed = Outcome {
            signal: Some(9),
            ..Outcome::default()
        };
        assert_eq!(failure_signature(&killed, ""), "signal 9");
    }

    #[test]
    fn a_program_that_cannot_start_is_signed_by_its_error() {
        let o = Outcome {
            error: Some(
                "cannot run \"/no/such/renderer\": No such file or directory (os error 2)".into(),
            ),
            ..Outcome::default()
        };
        assert_eq!(
            failure_signature(&o, ""),
            "could not run: cannot run \"<path>\": No such file or directory (os error #)"
        );
    }

    #[test]
    fn the_last_non_empty_line_is_taken() {
        assert_eq!(last_line(b"one\ntwo\n\n  \n"), "two");
        assert_eq!(last_line(b""), "");
    }
}
