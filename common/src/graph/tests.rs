//! The job-file parser's tests: graphs, presets, tiles, and errors that
//! name their field and line.

use super::*;

fn ok(file: &str, text: &str) -> Graph {
    parse(file, text, "ana", 1_000).unwrap_or_else(|e| panic!("{e}"))
}

fn bad(file: &str, text: &str) -> String {
    parse(file, text, "ana", 1_000).unwrap_err().to_string()
}

const RENDER_AND_ENCODE: &str = r#"
[[jobs]]
name = "render"
command = ["blender", "-b", "shot.blend", "-s", "{start}", "-e", "{end}", "-a"]
frames = "1-100"
blocksize = 5
notify = ["wrangler@example.com"]

[[jobs]]
name = "encode"
after = ["render"]
command = ["ffmpeg", "-i", "render/%04d.png", "shot.mp4"]
require = ["ffmpeg"]
"#;

#[test]
fn a_graph_comes_out_dependencies_first() {
    let g = ok("g.toml", RENDER_AND_ENCODE);
    let names: Vec<_> = g.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["render", "encode"]);
    assert_eq!(g.jobs[1].after_names[0].name, "render");
    assert_eq!(g.jobs[0].spec.blocksize, 5);
    assert_eq!(g.jobs[0].spec.owner, "ana");
    assert_eq!(g.jobs[1].spec.requirements.capabilities, ["ffmpeg"]);
}

#[test]
fn one_job_may_be_the_whole_file_in_toml_or_json() {
    let g = ok("j.toml", "command = [\"true\"]\nframes = \"1-3\"\n");
    assert_eq!(g.jobs.len(), 1);
    let g = ok(
        "j.json",
        r#"{"jobs": [{"name": "a", "command": ["true"]}, {"name": "b", "after": ["a:done,failed"], "command": ["true"]}]}"#,
    );
    assert_eq!(
        g.jobs[1].after_names[0].on,
        vec![JobStatus::Done, JobStatus::Failed]
    );
}

#[test]
fn each_class_of_mistake_names_the_file_line_and_field() {
    let e = bad(
        "g.toml",
        "[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\nframez = \"1\"\n",
    );
    assert!(
        e.starts_with("g.toml:4: ") && e.contains("unknown field `framez`"),
        "{e}"
    );
    let e = bad(
        "g.toml",
        "[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\nframes = \"1-x\"\n",
    );
    assert!(e.starts_with("g.toml:4: jobs[0] (a) field `frames`"), "{e}");
    let e = bad(
        "g.toml",
        "[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n\n[[jobs]]\nname = \"b\"\ncommand = [\"true\"]\nafter = [\"c\"]\n",
    );
    assert!(
        e.starts_with("g.toml:8: jobs[1] (b) field `after`: \"c\" is not a job in this file"),
        "{e}"
    );
    let cyclic = "[[jobs]]\nname = \"a\"\nafter = [\"b\"]\ncommand = [\"true\"]\n\n[[jobs]]\nname = \"b\"\nafter = [\"a\"]\ncommand = [\"true\"]\n";
    let e = bad("g.toml", cyclic);
    assert!(
        e.contains("cycle: a → b → a") && e.starts_with("g.toml:2:"),
        "{e}"
    );
    let e = bad("g.toml", "[[jobs]]\nname = \"a\"\n");
    assert!(
        e.contains("field `command`") && e.contains("has no command"),
        "{e}"
    );
    let e = bad("g.toml", "[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n");
    assert!(
        e.starts_with("g.toml:5:") && e.contains("names two jobs"),
        "{e}"
    );
    let e = bad(
        "g.json",
        "{\"jobs\": [{\"name\": \"a\",\n \"command\": [\"true\"],\n \"priority\": \"high\"}]}",
    );
    assert!(
        e.starts_with("g.json:3: ") && e.contains("invalid type"),
        "{e}"
    );
    let e = bad("g.toml", "command = [\"true\"\n");
    assert!(
        e.starts_with("g.toml:") && e.contains("not valid TOML"),
        "{e}"
    );
    let e = bad("g.toml", "command = [\"true\"]\nafter = [\"x:maybe\"]\n");
    assert!(e.contains("after takes done, failed or cancelled"), "{e}");
}

#[test]
fn the_example_files_are_valid() {
    let g = ok(
        "render-then-encode.toml",
        include_str!("../../../examples/render-then-encode.toml"),
    );
    assert_eq!(g.jobs[0].spec.command[0], "blender");
    assert_eq!(g.jobs[1].after_names[0].name, "render");
    let g = ok(
        "sim-render-comp.toml",
        include_str!("../../../examples/sim-render-comp.toml"),
    );
    let names: Vec<_> = g.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["sim", "render", "comp"]);
    assert_eq!(g.jobs[1].spec.requirements.capabilities, ["houdini"]);
}

#[test]
fn presets_and_times_work_in_files() {
    let g = ok(
        "p.toml",
        "preset = \"povray\"\nscene = \"a.pov\"\nframes = \"1-8\"\nstart_after = \"+1m\"\n",
    );
    let s = &g.jobs[0].spec;
    assert_eq!(s.command[0], "povray");
    assert_eq!(s.requirements.capabilities, ["povray"]);
    assert_eq!(s.start_after, Some(61_000));
}

#[test]
fn a_job_file_tiles_a_preset_and_names_what_is_wrong() {
    let g = ok(
        "t.toml",
        "preset = \"povray\"\nscene = \"s.pov\"\noutput = \"out/f.png\"\ntiles = \"3x2\"\nresolution = \"96x72\"\ntile_overlap = 2\n",
    );
    let spec = &g.jobs[0].spec;
    assert_eq!(
        spec.tiles.map(|t| (t.cols, t.rows, t.overlap)),
        Some((3, 2, 2))
    );
    assert!(spec.command.iter().any(|a| a == "+SC{tile_left}"));
    let e = bad(
        "t.toml",
        "preset = \"povray\"\nscene = \"s.pov\"\noutput = \"o.png\"\ntiles = \"3x3\"\n",
    );
    assert!(
        e.contains("field `tiles`") && e.contains("--resolution"),
        "{e}"
    );
    let e = bad(
        "t.toml",
        "command = [\"x\"]\ntiles = \"3x3\"\nresolution = \"96x72\"\n",
    );
    assert!(e.contains("need a `preset`"), "{e}");
}
