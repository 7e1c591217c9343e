// A small animated scene: the sample job of `scripts/farm up` (with POV-Ray
// installed) and the POV-Ray test. A sphere orbits a box
// as `clock` runs from 0 to 1 over the job's frames (+KFI/+KFF).
#version 3.7;
global_settings { assumed_gamma 1.0 }
camera { location <0, 2, -6> look_at <0, 0.5, 0> }
light_source { <4, 6, -5> color rgb 1 }
background { color rgb <0.1, 0.12, 0.2> }
plane { y, 0 pigment { checker color rgb 0.8 color rgb 0.3 } }
box { <-0.5, 0, -0.5>, <0.5, 1, 0.5> pigment { color rgb <0.2, 0.5, 0.9> } }
sphere { <2 * cos(clock * 2 * pi), 0.5, 2 * sin(clock * 2 * pi)>, 0.4
         pigment { color rgb <0.9, 0.3, 0.2> } }
