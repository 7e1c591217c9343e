//! The renderer built into DrQueue (`drqueue-engine render-demo`): a small
//! Whitted ray tracer of one animated scene, "orbit" (moons circling a
//! mirror sphere over a checkered floor). It exists so that `scripts/farm up`
//! renders real images on a machine with no renderer installed, and so the
//! tests always have a renderer that does real CPU work, prints progress and
//! writes real PNGs.
//!
//! | module | what |
//! |---|---|
//! | `vec3` | the vector maths |
//! | `scene` | the orbit scene at a frame, and ray casting through it |
//! | `image` | the pixel loop with progress, and PNG output |

mod image;
mod scene;
mod vec3;

pub use image::{render, RenderError, RenderOptions};
