"""The compiled loops against kmc.reference, the same processes written plainly.

Same random state in, identical trajectories out (sites, unwrapped cells, hop and attempt
counts, times, the final generator state): the compiled loops' batching, look-ahead,
prefetching and pool layout must never change which hop is made. Small lattices, a few
thousand hops each, so the pure-Python reference stays fast.
"""

import numpy as np
import pytest
from test_kernel import PaddedLandscape, T, disordered_landscape, lieb_lattice

from kmc import _lattice_gas, _selection, _walkers, kernel, lattice, reference

STATE = np.array([0x9E3779B97F4A7C15, 12345, 0xDEADBEEF, 7], dtype=np.uint64)


def test_xoshiro_first_outputs_and_uniforms():
    """From state (1, 2, 3, 4): the first output is rotl(2·5, 7)·9 = 11520 and the second
    rotl(0·5, 7)·9 = 0 (s1 becomes 2 ^ 2); a uniform is the top 53 bits over 2^53."""
    rng = reference.Xoshiro256([1, 2, 3, 4])
    assert rng.next() == 11520
    assert rng.next() == 0
    rng = reference.Xoshiro256([1, 2, 3, 4])
    assert rng.uniform() == (11520 >> 11) / 2.0**53
    jumped = reference.Xoshiro256([1, 2, 3, 4])
    jumped.jump()
    assert jumped.s != [1, 2, 3, 4] and all(0 <= v < 2**64 for v in jumped.s)


def landscapes():
    """(name, landscape-like): simple cubic, two multi-basis lattices, cubic padded by hand,
    and a general site graph of variable coordination in a triclinic cell (padded by
    kmc.lattice)."""
    site = {"dist": "normal", "mean": 0.0, "sigma": 0.05}
    saddle = {"dist": "uniform", "low": 0.15, "high": 0.45}  # many rate groups
    cubic = disordered_landscape(lattice.build("cubic", (4, 4, 4)), 1, site, saddle)
    honeycomb = disordered_landscape(lattice.build("honeycomb", (3, 3)), 2, site, saddle)
    fcc = disordered_landscape(lattice.build("fcc", (3, 3, 3)), 3, site, saddle)
    return {
        "cubic": cubic,
        "honeycomb": honeycomb,
        "fcc": fcc,
        "padded": PaddedLandscape(cubic, [0, 4, 8]),
        "lieb": disordered_landscape(lieb_lattice((4, 3)), 4, site, saddle),
    }


LANDSCAPES = landscapes()


def tables(land, incoming: bool):
    """(compiled tables, reference tables) of a landscape."""
    records, deltas, escape = kernel._site_records(land, T, incoming=incoming)
    lat = land.lattice
    plain = (land.rates(T, incoming=incoming), lat.neighbours, lat.hop_cells)
    return (records, deltas, lat.hop_cells), plain, escape


@pytest.mark.parametrize("name", list(LANDSCAPES))
def test_walkers_match_the_reference(name):
    """20 walkers (two batches of the compiled loop, the second partial), equilibration and
    production: each walker draws from its own stream, so the interleaved compiled loop and
    the plain one-walker-after-another loop make the same hops."""
    land = LANDSCAPES[name]
    lat = land.lattice
    compiled, plain, escape = tables(land, incoming=False)
    n, frames = 20, 9
    start = np.random.default_rng(0).choice(lat.n_sites, n).astype(np.int32)
    scale = np.mean(1.0 / escape)  # mean waiting time over the sites
    frame_times = np.linspace(0.0, 60 * scale, frames)
    results = []
    for run, table in ((_walkers.run_walkers, compiled), (reference.run_walkers, plain)):
        site, cell, state = start.copy(), lat.cell_coordinates(start), STATE.copy()
        out_sites = np.empty((frames, n), np.int32)
        out_cells = np.empty((frames, n, lat.dim), np.int32)
        hops = run(*table, site, cell, 20 * scale, frame_times, out_sites, out_cells, state)
        results.append((hops, site, cell, out_sites, out_cells, state))
    (hops, *arrays), (ref_hops, *ref_arrays) = results
    assert hops == ref_hops
    assert hops[0] > 30 * n and hops[1] == frames
    for a, b in zip(arrays, ref_arrays, strict=True):
        np.testing.assert_array_equal(a, b)


def gas_run(
    run, table, lat, start, holes, frame_times, fine_times, max_hops=0, full=False, **extra
):
    """One lattice-gas call from ions on ``start``; every output and updated input.
    ``full``: the occupant table of every site even with ions driven (interactions)."""
    n = len(start)
    ions = np.ascontiguousarray(np.column_stack([start, lat.cell_coordinates(start)]), np.int32)
    occupied = np.zeros(lat.n_sites, np.uint8)
    occupied[start] = 1
    occupant = np.empty(0, np.int32)
    carriers = start.copy()
    if holes or full:
        occupant = np.full(lat.n_sites, -1, np.int32)
        occupant[start] = np.arange(n, dtype=np.int32)
    if holes:
        carriers = np.flatnonzero(occupied == 0).astype(np.int32)
    frames = max(len(frame_times), 1)
    out_sites = np.zeros((frames, n), np.int32)
    out_cells = np.zeros((frames, n, lat.dim), np.int32)
    moves = np.zeros((len(fine_times), lat.n_basis * lat.coordination), np.int64)
    state = STATE.copy()
    result = run(*table, ions, occupied, occupant, carriers, holes, max_hops, frame_times,
                 out_sites, out_cells, fine_times, moves, state, **extra)  # fmt: skip
    return result, [ions, occupied, occupant, carriers, out_sites, out_cells, moves, state]


@pytest.mark.parametrize("name", list(LANDSCAPES))
@pytest.mark.parametrize("filling", [0.3, 0.7])  # ions driven / vacancies driven
def test_lattice_gas_matches_the_reference(name, filling):
    """A run to 2000 hops (equilibration), then one with frames and the fine displacement
    grid over as long again (production): identical hops, attempts, times and states. The
    compiled loop decides each attempt on the state at its turn, whatever it predicted and
    prefetched ahead."""
    land = LANDSCAPES[name]
    lat = land.lattice
    holes = filling > 0.5
    compiled, plain, _ = tables(land, incoming=holes)
    n = round(filling * lat.n_sites)
    start = np.sort(np.random.default_rng(1).choice(lat.n_sites, n, replace=False))
    start = start.astype(np.int32)
    runs = [(np.empty(0), np.empty(0), 2000)]
    for i, args in enumerate(runs):
        result, arrays = gas_run(_lattice_gas.run_lattice_gas, compiled, lat, start, holes, *args)
        expected, ref_arrays = gas_run(reference.run_lattice_gas, plain, lat, start, holes, *args)
        assert result == expected
        for a, b in zip(arrays, ref_arrays, strict=True):
            np.testing.assert_array_equal(a, b)
        if i == 0:
            assert result[0] == 2000
            runs.append((np.linspace(0, result[2], 7), np.linspace(0, result[2], 25)))
        else:
            assert 1000 < result[0] < 4000
            assert len(np.unique(arrays[5].reshape(-1, lat.dim), axis=0)) > 1  # ions moved


@pytest.mark.parametrize("holes", [False, True])
def test_a_capped_lattice_gas_matches_the_reference_and_its_uncapped_run(holes):
    """A production run capped at 300 attempts: the compiled loop and the reference stop
    at the same attempt with the same state and frames, the frames they keep are those of
    the uncapped run (a cap changes no hop before it), and ``work`` counts the attempts."""
    land = LANDSCAPES["cubic"]
    lat = land.lattice
    compiled, plain, _ = tables(land, incoming=holes)
    n = round((0.7 if holes else 0.3) * lat.n_sites)
    start = np.sort(np.random.default_rng(2).choice(lat.n_sites, n, replace=False))
    start = start.astype(np.int32)
    frame_times = np.linspace(0.0, 1e-8, 9)
    full, full_arrays = gas_run(
        _lattice_gas.run_lattice_gas, compiled, lat, start, holes, frame_times, np.empty(0)
    )
    assert full[3] == 9 and full[1] > 600
    capped = []
    loops = ((_lattice_gas.run_lattice_gas, compiled), (reference.run_lattice_gas, plain))
    for run, table in loops:
        work = np.array([5], dtype=np.int64)
        result, arrays = gas_run(run, table, lat, start, holes, frame_times, np.empty(0),
                                 max_attempts=300, work=work)  # fmt: skip
        assert result[1] == 300 and work[0] == 305
        capped.append((result, arrays))
    (result, arrays), (expected, ref_arrays) = capped
    assert result == expected and result[3] < 9
    for a, b in zip(arrays, ref_arrays, strict=True):
        np.testing.assert_array_equal(a, b)
    kept = result[3]
    assert np.all(frame_times[:kept] < result[2]) and frame_times[kept] >= result[2]
    np.testing.assert_array_equal(arrays[4][:kept], full_arrays[4][:kept])  # sites
    np.testing.assert_array_equal(arrays[5][:kept], full_arrays[5][:kept])  # cells


def test_capped_walkers_keep_no_frame_in_either_loop():
    """A cap on the walkers' hops all together: the interleaved compiled loop and the plain
    one stop after exactly that many hops and keep no frame (the walkers after the stopped
    one never ran); a cap above what the run needs changes nothing."""
    land = LANDSCAPES["fcc"]
    lat = land.lattice
    compiled, plain, escape = tables(land, incoming=False)
    n, frames = 20, 9
    start = np.random.default_rng(0).choice(lat.n_sites, n).astype(np.int32)
    scale = np.mean(1.0 / escape)
    frame_times = np.linspace(0.0, 60 * scale, frames)
    for cap, whole in ((500, False), (10**9, True)):
        outcomes = []
        for run, table in ((_walkers.run_walkers, compiled), (reference.run_walkers, plain)):
            site, cell, state = start.copy(), lat.cell_coordinates(start), STATE.copy()
            out_sites = np.empty((frames, n), np.int32)
            out_cells = np.empty((frames, n, lat.dim), np.int32)
            work = np.zeros(1, dtype=np.int64)
            hops, recorded = run(*table, site, cell, 20 * scale, frame_times, out_sites,
                                 out_cells, state, max_hops=cap, work=work)  # fmt: skip
            outcomes.append((hops, recorded, int(work[0]), out_sites))
        for _, recorded, work, _ in outcomes:
            assert recorded == (frames if whole else 0)
            assert (work < cap) if whole else (work == cap)
        if whole:
            assert outcomes[0][0] == outcomes[1][0] and outcomes[0][2] == outcomes[1][2]
            np.testing.assert_array_equal(outcomes[0][3], outcomes[1][3])


def test_group_moves_region_resizes_and_repacks_match_the_reference():
    """Saddles over 0.1–0.5 eV (dozens of rate groups, so most hops move a carrier to
    another group, growing and shrinking regions), over 4096 hops (an exact rebuild of the
    weights), and a pool of one member, so that the compiled pool must be repacked and
    enlarged: still the reference's trajectory, and the default pool's."""
    site = {"dist": "normal", "mean": 0.0, "sigma": 0.05}
    saddle = {"dist": "uniform", "low": 0.1, "high": 0.5}
    land = disordered_landscape(lattice.build("square", (8, 8)), 5, site, saddle)
    lat = land.lattice
    compiled, plain, _ = tables(land, incoming=False)
    start = np.arange(0, lat.n_sites, 3, dtype=np.int32)
    none = np.empty(0)
    counters: dict = {}
    runs = [
        gas_run(_lattice_gas.run_lattice_gas, compiled, lat, start, False, none, none, 6000,
                pool_size=1, counters=counters),
        gas_run(_lattice_gas.run_lattice_gas, compiled, lat, start, False, none, none, 6000),
        gas_run(reference.run_lattice_gas, plain, lat, start, False, none, none, 6000),
    ]  # fmt: skip
    assert counters["repacks"] >= 1 and counters["resizes"] > 1000
    assert counters["pool_size"] > 1
    assert runs[0][0][0] == 6000
    for result, arrays in runs[1:]:
        assert result == runs[0][0]
        for a, b in zip(arrays, runs[0][1], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("slack", [0, 8])
def test_selection_update_sites_matches_the_reference(slack):
    """The entry point for occupation-dependent rates (ion–ion interactions): change the
    records of some sites, regroup them with their carriers (or, with slack, keep those not
    too far below their bound). Interleaved with selections and moves, the compiled
    structure (tracking every carrier's slot, with a tiny pool that keeps repacking) agrees
    with kmc.reference.Groups after every operation: the same groups, capacities and
    members in slot order, and the same selection of any uniform."""
    land = LANDSCAPES["cubic"]
    lat = land.lattice
    (records, deltas, hop_cells), (rates, *_), _ = tables(land, incoming=False)
    records, rates = records.copy(), rates.copy()
    gen = np.random.default_rng(7)
    n = 20
    carriers = np.sort(gen.choice(lat.n_sites, n, replace=False)).astype(np.int32)
    occupied = np.zeros(lat.n_sites, np.uint8)
    occupied[carriers] = 1
    fast = _selection.Selection(records, deltas, hop_cells, occupied, carriers.copy(), False,
                                track=True, pool_size=1, slack=slack)  # fmt: skip
    plain = reference.Groups([reference.total_rate(r) for r in rates], occupied,
                             carriers.copy(), False, slack=slack)  # fmt: skip
    where = dict(enumerate(carriers.tolist()))  # carrier -> site
    z = lat.coordination
    for step in range(300):
        u = gen.random()
        assert fast.select(u) == plain.select(u)
        g, m, _ = plain.select(u)
        member = plain.member(g, m) if g > 0 else None
        assert (fast.member(g, m) if g > 0 else None) == member
        if member is not None and step % 2 == 0:  # a hop to a random empty site
            empty = np.setdiff1d(np.arange(lat.n_sites), list(where.values()))
            target = int(gen.choice(empty))
            fast.move(g, m, target)
            plain.move(g, m, target)
            where[member[0]] = target
        else:  # the rates of a few sites change (taken from other sites: inside the table)
            sites = gen.choice(lat.n_sites, 3, replace=False).astype(np.int32)
            donors = gen.choice(lat.n_sites, 3)
            records[sites, :z] = rates[donors]
            rates[sites] = rates[donors]
            on = {s: c for c, s in where.items()}
            owners = np.array([on.get(int(s), -1) for s in sites], np.int32)
            fast.update_sites(sites, owners)
            plain.update_sites(sites, owners, [reference.total_rate(rates[s]) for s in sites])
        assert fast.groups() == plain.groups()
        assert fast.rate_bound == plain.rate_bound
        assert fast.check_slots()
    assert fast.counters["repacks"] > 0


def test_update_sites_refuses_what_it_cannot_do():
    land = LANDSCAPES["cubic"]
    (records, deltas, hop_cells), _, _ = tables(land, incoming=False)
    records = records.copy()
    carriers = np.arange(5, dtype=np.int32)
    occupied = np.zeros(land.lattice.n_sites, np.uint8)
    occupied[carriers] = 1
    one = np.zeros(1, np.int32)
    untracked = _selection.Selection(records, deltas, hop_cells, occupied, carriers, False)
    with pytest.raises(ValueError, match="track=True"):
        untracked.update_sites(one, one)
    tracked = _selection.Selection(records, deltas, hop_cells, occupied, carriers, False, True)
    records[0, 0] = 1e300
    with pytest.raises(ValueError, match="outside the group table"):
        tracked.update_sites(one, one)


def interacting_tables(land, pair):
    """(compiled tables, reference tables, compiled and reference interaction keywords) for
    per-bond pair energies: the reference gets the rates as a plain mutable table it
    overwrites."""
    records, deltas, _ = kernel._site_records(land, T, incoming=False, extra=1)
    lat = land.lattice
    tables = kernel.interaction_tables(lat, records, pair, T)
    plain = (records[:, : lat.coordination].copy(), lat.neighbours, lat.hop_cells)
    compiled_extra = {"couplings": tables["couplings"], "span": tables["span"]}
    extra = {key: tables[key] for key in ("scaled", "weight", "reverse", "span")}
    return (records, deltas, lat.hop_cells), plain, compiled_extra, extra


@pytest.mark.parametrize("name", ["cubic", "honeycomb", "fcc", "lieb"])
@pytest.mark.parametrize("filling", [0.3, 0.7])
def test_interacting_gas_matches_the_reference(name, filling):
    """Per-bond pair energies (repulsive and attractive, up to 0.1 eV): the compiled loop,
    which rewrites the records of the ions around both ends of every hop and regroups them,
    makes the same hops, attempts and times as the plain one (to 1500 hops, then a
    production run with frames), ions driven at both fillings."""
    land = LANDSCAPES[name]
    lat = land.lattice
    pair = np.random.default_rng(5).uniform(-0.04, 0.1, lat.n_bonds)
    compiled, plain, compiled_extra, extra = interacting_tables(land, pair)
    n = round(filling * lat.n_sites)
    start = np.sort(np.random.default_rng(1).choice(lat.n_sites, n, replace=False))
    start = start.astype(np.int32)
    runs = [(np.empty(0), np.empty(0), 1500)]
    for i, args in enumerate(runs):
        result, arrays = gas_run(
            _lattice_gas.run_lattice_gas, compiled, lat, start, False, *args, full=True,
            **compiled_extra,
        )  # fmt: skip
        expected, ref_arrays = gas_run(
            reference.run_lattice_gas, plain, lat, start, False, *args, full=True, **extra
        )
        assert result == expected
        for a, b in zip(arrays, ref_arrays, strict=True):
            np.testing.assert_array_equal(a, b)
        # the ions' current rates (an empty site's are those of an ion put there in the
        # compiled loop, of the ion that last left it in the reference's table)
        on = arrays[1] != 0
        np.testing.assert_array_equal(compiled[0][on, : lat.coordination], plain[0][on])
        if i == 0:
            assert result[0] == 1500
            runs.append((np.linspace(0, result[2], 7), np.linspace(0, result[2], 25)))
        else:
            assert result[0] > 300


@pytest.mark.parametrize("name", ["cubic", "honeycomb", "fcc", "lieb"])
@pytest.mark.parametrize("energy", [0.05, -0.03])
def test_one_pair_energy_fast_path_matches_the_reference(name, energy):
    """One pair energy on every bond: the compiled loop keeps counts of occupied neighbours
    in place of the fields (where every w is the same number) and still makes the same
    hops, attempts and times as the plain loop, and as its own general path (one_weight
    false), leaving the same rates and fields in the records."""
    land = LANDSCAPES[name]
    lat = land.lattice
    pair = np.full(lat.n_bonds, energy)
    start = np.sort(np.random.default_rng(2).choice(lat.n_sites, lat.n_sites // 2, replace=False))
    start = start.astype(np.int32)
    outcomes = []
    for one_weight in (True, False):
        compiled, plain, compiled_extra, extra = interacting_tables(land, pair)
        result, arrays = gas_run(
            _lattice_gas.run_lattice_gas, compiled, lat, start, False, np.empty(0),
            np.empty(0), 1500, full=True, one_weight=one_weight, **compiled_extra,
        )  # fmt: skip
        outcomes.append((result, arrays, compiled[0].copy()))
    expected, ref_arrays = gas_run(
        reference.run_lattice_gas, plain, lat, start, False, np.empty(0), np.empty(0), 1500,
        full=True, **extra,
    )  # fmt: skip
    (fast, fast_arrays, fast_records), (general, general_arrays, general_records) = outcomes
    assert fast == general == expected
    assert fast[0] == 1500
    for a, b, c in zip(fast_arrays, general_arrays, ref_arrays, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    z = lat.coordination
    np.testing.assert_array_equal(fast_records[:, : z + 2], general_records[:, : z + 2])
    on = fast_arrays[1] != 0  # the ions' current rates (see the test above)
    np.testing.assert_array_equal(fast_records[on, :z], plain[0][on])
