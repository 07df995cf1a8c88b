"""Toy world v2's SDFs against independent computations, and the objects and layouts against the spec."""

import math

import numpy as np
import pytest
import torch

from sds3d.toyworld import shapes as v1_shapes
from sds3d.toyworld.v2 import primitives as P
from sds3d.toyworld.v2 import spec
from sds3d.toyworld.v2.objects import ObjectError, composition, faced_object, from_prompt



def T(x) -> torch.Tensor:
    """Points in float64: the checks below are at 1e-9 and must not see float32 rounding."""
    return torch.tensor(x, dtype=torch.float64)


def colour_at(obj, p) -> torch.Tensor:
    """An object's albedo at float64 points, as float32 (the colours' dtype)."""
    return obj.albedo(p).float()


def _points(n, scale=0.8, seed=0):
    return (torch.rand(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1) * scale


def _segment_distance_2d(p, a, b):
    """Distance from 2D points (N, 2) to the segment ab."""
    ab = b - a
    t = (((p - a) @ ab) / (ab @ ab)).clip(0, 1)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def _polygon_sdf(p, corners):
    """Signed distance to a convex polygon (counter-clockwise corners): exact, independent of iq."""
    d = np.min([_segment_distance_2d(p, corners[i], corners[(i + 1) % len(corners)]) for i in range(len(corners))], axis=0)
    edges = [(corners[i], corners[(i + 1) % len(corners)]) for i in range(len(corners))]
    inside = np.all([(b[0] - a[0]) * (p[:, 1] - a[1]) - (b[1] - a[1]) * (p[:, 0] - a[0]) >= 0 for a, b in edges], axis=0)
    return np.where(inside, -d, d)


def test_sphere_and_capsule():
    p = _points(500)
    c = T([0.1, -0.2, 0.3])
    assert torch.allclose(P.sphere(p, c.tolist(), 0.25), (p - c).norm(dim=-1) - 0.25)
    a, b = np.array([0.0, 0.0, -0.12]), np.array([0.0, 0.0, 0.1])
    seg = a + np.linspace(0, 1, 20001)[:, None] * (b - a)  # the segment, densely
    brute = np.min(np.linalg.norm(p.numpy()[:, None] - seg[None], axis=-1), axis=1) - 0.38
    assert np.allclose(P.capsule(p, a, b, 0.38).numpy(), brute, atol=1e-5)


@pytest.mark.parametrize("a,b,ra,rb", [((0, 0.19, 0.38), (0, 0.27, 0.62), 0.08, 0.0),  # owl ear
                                       ((0.36, 0, 0.04), (0.52, 0, -0.01), 0.08, 0.0),  # owl beak
                                       ((0.1, -0.2, -0.3), (-0.2, 0.3, 0.4), 0.3, 0.12)])  # a frustum
def test_capped_cone_is_the_distance_to_its_trapezoid(a, b, ra, rb):
    # A solid of revolution: in the (axial, radial) half-plane of each point it is the trapezoid
    # (0, 0), (L, 0), (L, rb), (0, ra), and the 3D distance is the 2D distance to it.
    a, b = np.array(a, float), np.array(b, float)
    p = _points(2000, scale=0.9).numpy()
    L = np.linalg.norm(b - a)
    axis = (b - a) / L
    h = (p - a) @ axis
    rho = np.linalg.norm((p - a) - h[:, None] * axis, axis=1)
    corners = [np.array(c, float) for c in ((0, 0), (L, 0), (L, rb), (0, ra))]
    if rb == 0:  # pointed: a triangle
        corners.pop(2)
    expected = _polygon_sdf(np.stack([h, rho], 1), corners)
    # The trapezoid's edge on the axis (rho = 0) is interior to the solid, not its surface.
    inside = expected < 0
    expected[inside] = -_polygon_sdf_boundary_off_axis(np.stack([h, rho], 1)[inside], corners)
    got = P.capped_cone(torch.from_numpy(p), a, b, ra, rb).numpy()
    assert np.allclose(got, expected, atol=1e-9)


def _polygon_sdf_boundary_off_axis(q, corners):
    """Distance to the trapezoid's edges other than the one on the axis (corners[0] -> corners[1])."""
    n = len(corners)
    edges = [(corners[i], corners[(i + 1) % n]) for i in range(1, n)]
    return np.min([_segment_distance_2d(q, a, b) for a, b in edges], axis=0)


def test_rounded_box_is_the_distance_to_a_box_minus_the_rounding():
    p = _points(2000).numpy()
    c, h, r = np.array([0.0, 0.0, -0.14]), np.array([0.31, 0.39, 0.27]), 0.01
    q = p - c
    outside = np.linalg.norm(q - np.clip(q, -h, h), axis=1)
    depth = np.min(h - np.abs(q), axis=1)  # distance to the nearest face from inside
    expected = np.where(np.all(np.abs(q) <= h, axis=1), -depth, outside) - r
    assert np.allclose(P.rounded_box(torch.from_numpy(p), c, h, r).numpy(), expected, atol=1e-12)
    # The spec's note: faces at x = +-0.32, y = +-0.40, z in [-0.42, 0.14].
    for face in ([0.32, 0, -0.14], [-0.32, 0, -0.14], [0, 0.40, -0.14], [0, 0, -0.42], [0, 0, 0.14]):
        assert abs(P.rounded_box(T(face), c, h, r).item()) < 1e-12


def test_triangle_and_prism_are_exact():
    uv = _points(3000).numpy()[:, :2]
    w, h = 0.4, 0.36
    corners = [np.array(c) for c in ((0.0, 0.0), (w, h), (-w, h))]  # apex at the origin, base at v = h
    expected2 = _polygon_sdf(uv, corners)
    assert np.allclose(P.triangle_isosceles(torch.from_numpy(uv), w, h).numpy(), expected2, atol=1e-12)
    # The roof: apex (0, 0, 0.5), base at z = 0.14 from x = -0.4 to 0.4, |y| <= 0.44.
    p = _points(3000).numpy()
    d2 = _polygon_sdf(np.stack([p[:, 0], 0.5 - p[:, 2]], 1), corners)
    dy = np.abs(p[:, 1]) - 0.44
    # Exact distance to the extruded solid: inside, the nearer of the 2D boundary and the caps;
    # outside, the Euclidean combination of the two outside parts.
    expected = np.where((d2 < 0) & (dy < 0), np.maximum(d2, dy), np.hypot(np.maximum(d2, 0), np.maximum(dy, 0)))
    got = P.tri_prism_y(torch.from_numpy(p), (0.0, 0.0, 0.5), w, h, 0.44).numpy()
    assert np.allclose(got, expected, atol=1e-12)
    for q in ([0, 0, 0.5], [0.4, 0.44, 0.14], [-0.4, -0.44, 0.14], [0.2, 0.0, 0.14]):  # ridge, eaves, base
        assert abs(P.tri_prism_y(T(q), (0.0, 0.0, 0.5), w, h, 0.44).item()) < 1e-12


def test_v1_shape_scaled():
    p = _points(500)
    got = P.v1_shape(p, "cone", (0.0, 0.1, -0.2), 0.6)
    assert torch.allclose(got, 0.6 * v1_shapes.sdf("cone", (p - T([0.0, 0.1, -0.2])) / 0.6))
    assert abs(P.v1_shape(T([0.0, 0.1, -0.2 + 0.27]), "cone", (0.0, 0.1, -0.2), 0.6).item()) < 1e-7  # apex


def test_bounding_radius_contains_each_object():
    for obj in [faced_object(o, "red", v) for o in spec.OBJECTS for v in (None, "two_faced", "side_faced", "three_faced")] + \
               [from_prompt("a red cone next to a blue cube"), from_prompt("a red cube on top of a blue cone")]:
        p = torch.nn.functional.normalize(_points(20000, seed=1), dim=-1) * obj.bounding_radius()
        assert (obj.sdf(p) > 0).all(), obj.prompt


OBJECTS = [faced_object(o, "blue", v) for o in spec.OBJECTS for v in (None, "two_faced", "side_faced", "three_faced", "faceless")] + \
          [faced_object("owl", "blue", "two_faced_eyes_only")] + \
          [composition(r, "red", a, "blue", b) for r in spec.RELATIONS for a in spec.COMPOSITION_SHAPES
           for b in spec.COMPOSITION_SHAPES if a != b]


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: f"{o.prompt}-{o.variant}")
def test_sdf_gradient_norm_is_one_near_the_surface(obj):
    # Points within 0.05 of the surface; central differences of an exact SDF have norm 1 except
    # where the stencil straddles a crease of the distance (rare at h = 1e-5) and never exceed 1.
    p = _points(40000, scale=0.75, seed=2)
    p = p[obj.sdf(p).abs() < 0.05][:3000]
    h = 1e-5
    grad = torch.stack([(obj.sdf(p + h * e) - obj.sdf(p - h * e)) / (2 * h) for e in torch.eye(3, dtype=torch.float64)], dim=-1)
    norm = grad.norm(dim=-1)
    assert len(p) > 500
    assert (norm <= 1 + 1e-6).all()
    assert ((norm - 1).abs() < 1e-4).float().mean() > 0.99


def test_faced_objects_follow_the_spec_notes():
    owl, house, chair = (faced_object(o, "red") for o in spec.OBJECTS)
    for obj, name in ((owl, "owl"), (house, "house"), (chair, "chair")):
        ext = spec.FACED[name]["extent"]
        lo = T([ext["x"][0], ext["y"][0], ext["z"][0]])
        hi = T([ext["x"][1], ext["y"][1], ext["z"][1]])
        grid = torch.stack(torch.meshgrid(*[torch.linspace(-0.8, 0.8, 161, dtype=torch.float64)] * 3, indexing="ij"), -1).reshape(-1, 3)
        inside = grid[obj.sdf(grid) < 0]
        assert (inside.min(0).values >= lo - 0.011).all() and (inside.max(0).values <= hi + 0.011).all(), name
        # ... and reaches it (within 0.03: the ear tips and the roof ridge are thin near their ends).
        assert (inside.min(0).values <= lo + 0.03).all() and (inside.max(0).values >= hi - 0.03).all(), name
    # Owl: eye centres on the head sphere (centre (0, 0, 0.10), r 0.38) at azimuth +-28, elevation 15.
    for d in owl.decals:
        c = T(d.centre)
        assert abs((c - T([0, 0, 0.10])).norm().item() - 0.38) < 2e-3
        assert abs(abs(math.degrees(math.atan2(c[1], c[0]))) - 28) < 0.2
    # The beak protrudes 0.14 in front of the body (x = 0.38 at its height).
    assert abs(owl.sdf(T([0.52, 0.0, -0.01])).item()) < 1e-9 and abs(owl.sdf(T([0.38, 0.0, -0.08])).item()) < 1e-9
    # House roof: ridge at z 0.50, eaves at 0.14 with an overhang of 0.08 in x and 0.04 in y.
    assert abs(house.sdf(T([0.0, 0.44, 0.5])).item()) < 1e-9
    assert abs(house.sdf(T([0.40, 0.0, 0.14])).item()) < 1e-9
    # Chair (errata): legs reach into the seat, feet at z = -0.495; backrest slab x in [-0.26, -0.18].
    assert (chair.sdf(T([[0.21, 0.21, z] for z in np.linspace(-0.49, 0.0, 50)])) < 0).all()
    assert abs(chair.sdf(T([-0.21, -0.21, -0.495])).item()) < 1e-9
    assert abs(chair.sdf(T([-0.26, 0.0, 0.3])).item()) < 1e-9 and abs(chair.sdf(T([-0.18, 0.0, 0.3])).item()) < 1e-9


def test_albedo_follows_parts_then_decals_in_order():
    owl = faced_object("owl", "green")
    slot, white, pupil, beak = (spec.colour_rgb(c) for c in ("green", "white", "pupil", "beak"))
    eye = T([0.324, 0.172, 0.198])
    # A point of the head sphere 0.09 from the eye centre: outside the pupil (0.055), inside the white (0.12).
    head = T([0.0, 0.0, 0.10])
    u = torch.nn.functional.normalize(eye - head, dim=0)
    v = torch.nn.functional.normalize(T([0.0, 0.0, 1.0]) - u[2] * u, dim=0)
    theta = 2 * math.asin(0.09 / (2 * 0.38))
    ring = head + 0.38 * (math.cos(theta) * u + math.sin(theta) * v)
    assert (ring - eye).norm().item() == pytest.approx(0.09, abs=2e-3) and abs(owl.sdf(ring).item()) < 1e-9
    assert torch.allclose(colour_at(owl, eye[None])[0], pupil)  # pupil decal listed after the white
    assert torch.allclose(colour_at(owl, ring[None])[0], white)
    assert torch.allclose(colour_at(owl, T([[0.5, 0.0, -0.005]]))[0], beak)  # a fixed-colour part
    assert torch.allclose(colour_at(owl, T([[-0.38, 0.0, 0.0]]))[0], slot)
    assert owl.slot_index(torch.stack([eye, T([-0.38, 0.0, 0.0]), T([0.5, 0.0, -0.005])])).tolist() == [-1, 0, -1]


def test_janus_variants_move_the_features():
    owl = faced_object("owl", "red", "two_faced")
    assert abs(owl.sdf(T([-0.52, 0.0, -0.01])).item()) < 1e-9  # the mirrored beak tip
    back_eye = T([[-0.324, -0.172, 0.198]])
    assert torch.allclose(colour_at(owl, back_eye)[0], spec.colour_rgb("pupil"))
    only_eyes = faced_object("owl", "red", "two_faced_eyes_only")
    assert torch.allclose(colour_at(only_eyes, back_eye)[0], spec.colour_rgb("pupil")) and only_eyes.sdf(T([-0.5, 0.0, -0.01])) > 0
    side = faced_object("owl", "red", "side_faced")
    assert abs(side.sdf(T([0.0, 0.52, -0.01])).item()) < 1e-9  # beak towards +y
    three = faced_object("house", "red", "three_faced")
    # The wall point in direction 120 deg at door height (the +y wall) has a door (errata: the
    # rotated door reaches out to the wall); the back wall's centre (180 deg) has none.
    r = 0.40 / math.sin(math.radians(120))
    on_wall = T([[r * math.cos(math.radians(120)), 0.40, -0.27], [-0.32, 0.0, -0.27]])
    assert three.sdf(on_wall).abs().max().item() < 1e-9
    assert torch.allclose(colour_at(three, on_wall), torch.stack([spec.colour_rgb("door"), spec.colour_rgb("red")]))
    chair = faced_object("chair", "red", "faceless")
    assert chair.sdf(T([-0.22, 0.0, 0.3])) > 0  # the stool has no backrest
    with pytest.raises(ObjectError, match="owl's only"):
        faced_object("house", "red", "two_faced_eyes_only")
    with pytest.raises(ObjectError, match="unknown Janus variant"):
        faced_object("owl", "red", "four_faced")


@pytest.mark.parametrize("s1,s2", [(a, b) for a in spec.COMPOSITION_SHAPES for b in spec.COMPOSITION_SHAPES if a != b])
def test_composition_layouts(s1, s2):
    e1, e2 = spec.HALF_HEIGHT[s1], spec.HALF_HEIGHT[s2]
    zaxis = torch.stack([torch.zeros(4001, dtype=torch.float64), torch.zeros(4001, dtype=torch.float64), torch.linspace(-0.7, 0.7, 4001, dtype=torch.float64)], -1)
    # on top of: s1's lowest point touches s2's highest point at z = e2 - e1 on the z axis.
    top = composition("on_top_of", "red", s1, "blue", s2)
    d = top.part_sdf(zaxis)
    z = zaxis[:, 2]
    assert z[d[:, 0] < 0].min().item() == pytest.approx(e2 - e1, abs=1e-3)
    assert z[d[:, 1] < 0].max().item() == pytest.approx(e2 - e1, abs=1e-3)
    assert z[top.sdf(zaxis) < 0].min().item() == pytest.approx(-(e1 + e2), abs=1e-3)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-0.7, 0.7, 71, dtype=torch.float64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert (top.part_sdf(grid).max(-1).values > -1e-9).all()  # the parts do not overlap
    # next to: both rest on z = -0.30, s1 at y = -0.36 (image-left from the front), s2 at +0.36.
    side = composition("next_to", "red", s1, "blue", s2)
    for k, (s, y) in enumerate(((s1, -0.36), (s2, 0.36))):
        col = torch.stack([torch.zeros(4001, dtype=torch.float64), torch.full((4001,), y, dtype=torch.float64), torch.linspace(-0.7, 0.7, 4001, dtype=torch.float64)], -1)
        assert col[side.part_sdf(col)[:, k] < 0, 2].min().item() == pytest.approx(-0.30, abs=1e-3)
    # The parts do not touch; where their widest sections share a height (the cube's z-range holds
    # the sphere's equator and the cone's base) the gap is 0.72 - the two half widths.
    width = {"sphere": 0.30, "cube": 0.24, "cone": 0.30}
    surface = grid[(side.part_sdf(grid)[:, 0]).abs() < 0.01]
    gap = side.part_sdf(surface)[:, 1].min().item()
    assert gap > 0.1
    if "cube" in (s1, s2):
        assert gap == pytest.approx(0.72 - width[s1] - width[s2], abs=0.015)


def test_spec_layout_examples():
    top = composition("on_top_of", "red", "sphere", "blue", "cube")
    assert top.parts[0].params["centre"] == (0.0, 0.0, 0.24) and top.parts[1].params["centre"] == (0.0, 0.0, -0.30)
    side = composition("next_to", "red", "sphere", "blue", "cube")
    assert side.parts[0].params["centre"] == (0.0, -0.36, 0.0)
    assert side.parts[1].params["centre"] == pytest.approx((0.0, 0.36, -0.06))
    assert side.part_sdf(T([0.0, -0.06, 0.0]))[1].item() == pytest.approx(0.18, abs=1e-9)  # the example's gap
