//! The orbit scene: a mirror sphere in the middle, moons on circular orbits
//! (their angle set by the frame), a checkered floor, one sun with shadows,
//! and a sky gradient.

use crate::vec3::Vec3;
use std::f64::consts::TAU;

/// How many mirror bounces a ray may take.
const MAX_DEPTH: u32 = 4;
/// Rays start this far off a surface, so they do not hit it again.
const EPSILON: f64 = 1e-6;

struct Sphere {
    centre: Vec3,
    radius: f64,
    colour: Vec3,
    mirror: f64,
}

pub struct Scene {
    spheres: Vec<Sphere>,
    sun: Vec3,
    pub eye: Vec3,
    pub look_at: Vec3,
}

enum Surface<'a> {
    Sphere(&'a Sphere),
    Floor,
}

impl Scene {
    /// The scene at `frame` of an orbit that takes `frames_per_orbit` frames.
    pub fn at(frame: i64, frames_per_orbit: u32) -> Scene {
        let phase = TAU * (frame as f64) / f64::from(frames_per_orbit.max(1));
        let mut spheres = vec![Sphere {
            centre: Vec3(0.0, 1.0, 0.0),
            radius: 1.0,
            colour: Vec3(0.9, 0.9, 0.95),
            mirror: 0.6,
        }];
        let moons = [
            (2.2, 0.35, Vec3(0.9, 0.25, 0.2), 1.0),
            (3.1, 0.45, Vec3(0.2, 0.5, 0.95), -0.7),
            (4.0, 0.3, Vec3(0.95, 0.8, 0.2), 0.45),
        ];
        for (i, (orbit, radius, colour, speed)) in moons.into_iter().enumerate() {
            let a = phase * speed + i as f64 * 2.1;
            spheres.push(Sphere {
                centre: Vec3(
                    orbit * a.cos(),
                    radius + 0.3 * (a * 2.0).sin().abs(),
                    orbit * a.sin(),
                ),
                radius,
                colour,
                mirror: 0.15,
            });
        }
        Scene {
            spheres,
            sun: Vec3(-0.5, 1.0, -0.3).unit(),
            eye: Vec3(0.0, 3.2, -8.0),
            look_at: Vec3(0.0, 0.8, 0.0),
        }
    }

    /// The colour seen along a ray.
    pub fn trace(&self, origin: Vec3, dir: Vec3, depth: u32) -> Vec3 {
        let Some((t, surface)) = self.hit(origin, dir) else {
            return sky(dir);
        };
        let point = origin + dir * t;
        let (normal, colour, mirror) = match surface {
            Surface::Sphere(s) => ((point - s.centre).unit(), s.colour, s.mirror),
            Surface::Floor => {
                let check = ((point.0.floor() + point.2.floor()) as i64).rem_euclid(2) == 0;
                let c = if check {
                    Vec3(0.85, 0.85, 0.8)
                } else {
                    Vec3(0.15, 0.15, 0.2)
                };
                (Vec3(0.0, 1.0, 0.0), c, 0.2)
            }
        };
        let lit = self.hit(point + normal * EPSILON, self.sun).is_none();
        let diffuse = if lit {
            normal.dot(self.sun).max(0.0)
        } else {
            0.0
        };
        let mut c = colour * (0.15 + 0.85 * diffuse);
        if mirror > 0.0 && depth < MAX_DEPTH {
            let bounce = dir.reflect(normal).unit();
            let seen = self.trace(point + normal * EPSILON, bounce, depth + 1);
            c = c * (1.0 - mirror) + seen.tint(colour) * mirror;
        }
        if lit {
            let half = (self.sun - dir).unit();
            c = c + Vec3(1.0, 1.0, 1.0) * normal.dot(half).max(0.0).powi(60) * 0.5;
        }
        c
    }

    fn hit(&self, origin: Vec3, dir: Vec3) -> Option<(f64, Surface<'_>)> {
        let mut best: Option<(f64, Surface<'_>)> = None;
        for s in &self.spheres {
            if let Some(t) = hit_sphere(s, origin, dir) {
                if best.as_ref().is_none_or(|(b, _)| t < *b) {
                    best = Some((t, Surface::Sphere(s)));
                }
            }
        }
        if dir.1 < -EPSILON {
            let t = -origin.1 / dir.1;
            if t > EPSILON && best.as_ref().is_none_or(|(b, _)| t < *b) {
                best = Some((t, Surface::Floor));
            }
        }
        best
    }
}

fn hit_sphere(s: &Sphere, origin: Vec3, dir: Vec3) -> Option<f64> {
    let oc = origin - s.centre;
    let b = oc.dot(dir);
    let c = oc.dot(oc) - s.radius * s.radius;
    let disc = b * b - c;
    if disc < 0.0 {
        return None;
    }
    let root = disc.sqrt();
    [-b - root, -b + root].into_iter().find(|t| *t > EPSILON)
}

fn sky(dir: Vec3) -> Vec3 {
    let up = dir.1.clamp(0.0, 1.0);
    Vec3(0.55, 0.7, 0.95) * up + Vec3(0.95, 0.85, 0.75) * (1.0 - up)
}
