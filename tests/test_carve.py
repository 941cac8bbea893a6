"""Carving big flagged cells into labels (pylal/select/carve.py, docs/carving.md): the core's
environment and reference forces against the parent's, masked fits against the parent's rows,
and the same cells from 1, 2 and 4 owners of the atoms."""
import threading

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from pylal.fit.design import FORCE_WEIGHTS, PARTIAL, configuration_rows
from pylal.lammps.comm import Collectives
from pylal.sampling import diamond_si
from pylal.select.carve import CarveError, CarveRule, OwnedAtoms, carve

SW_CUT = 3.77118  # Si.sw: a * sigma = 1.8 * 2.0951 A


def parent_cell(repeat=6, vacancies=3, seed=0):
    """Rattled diamond Si with a few vacancies and an f_i with three hot spots half a cell apart
    (lattice sites, so that the regions of 128 atoms of a 6x6x6 cell do not overlap)."""
    atoms = diamond_si(repeat, rattle=0.1, seed=seed)
    rng = np.random.default_rng(seed)
    del atoms[rng.choice(len(atoms), vacancies, replace=False)]
    f_i = rng.uniform(0.0, 0.1, len(atoms))
    for spot, value in zip([(0, 0, 0), (0.5, 0, 0), (0, 0.5, 0)], (1.0, 0.9, 0.8)):
        f_i[np.argmin(np.linalg.norm(atoms.positions - np.array(spot) @ atoms.cell.array, axis=1))] = value
    atoms.arrays["f_i"] = f_i
    atoms.arrays["id"] = np.arange(1, len(atoms) + 1)
    return atoms


def owned(atoms, owner, n_owners):
    sel = owner == np.arange(n_owners)[:, None]
    return [OwnedAtoms(atoms.arrays["id"][s], atoms.numbers[s], atoms.positions[s], atoms.arrays["f_i"][s]) for s in sel]


class ThreadComm:
    """An in-process communicator of n 'ranks', one thread each (the collectives carve() uses)."""

    def __init__(self, rank, slots, barrier):
        self.rank, self.slots, self.barrier = rank, slots, barrier

    def allgather(self, obj):
        self.slots[self.rank] = obj
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out

    def gather(self, obj):
        out = self.allgather(obj)
        return out if self.rank == 0 else None

    def bcast(self, obj):
        return self.allgather(obj)[0]

    def sum(self, x):
        return sum(self.allgather(x))


def carve_on_owners(atoms, rule, n_owners, seed=1):
    """carve() with the atoms dealt at random to n_owners threads; rank 0's cells."""
    owner = np.random.default_rng(seed).integers(0, n_owners, len(atoms))
    parts, slots, barrier = owned(atoms, owner, n_owners), [None] * n_owners, threading.Barrier(n_owners)
    results = [None] * n_owners

    def run(r):
        results[r] = carve(parts[r], atoms.cell.array, atoms.pbc, rule, ThreadComm(r, slots, barrier))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(n_owners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(res is None for res in results[1:])
    return results[0]


def environments(atoms, cutoff, ids):
    """{id: {Z: sorted distances of its neighbours of species Z within cutoff}} for atoms with these IDs."""
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    out = {}
    for k in np.flatnonzero(np.isin(atoms.arrays["id"], ids)):
        sel = i == k
        out[atoms.arrays["id"][k]] = {z: np.sort(d[sel][atoms.numbers[j[sel]] == z]) for z in set(atoms.numbers[j[sel]])}
    return out


def same_environments(a, b) -> bool:
    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(len(a[k][z]) == len(b[k][z]) and np.allclose(a[k][z], b[k][z], atol=1e-9)
                                           for z in a[k]) for k in a)


def core(cell):
    return cell.arrays[FORCE_WEIGHTS] > 0


def test_core_sees_the_parent_environment():
    """margin = r_cut (the default): every core atom has the parent's neighbours within r_cut."""
    parent = parent_cell()
    rule = CarveRule(max_atoms=128, margin=SW_CUT, max_regions=3)
    cells = carve(owned(parent, np.zeros(len(parent), int), 1)[0], parent.cell.array, parent.pbc, rule, Collectives())
    assert len(cells) == 3  # three hot spots, far apart
    assert [c.arrays["id"][np.argmax(c.arrays["f_i"])] for c in cells] == list(
        parent.arrays["id"][np.argsort(-parent.arrays["f_i"])[:3]])
    for cell in cells:
        assert len(cell) <= 128 and cell.pbc.all() and cell.info[PARTIAL]
        ids = cell.arrays["id"][core(cell)]
        assert len(ids) >= 5
        assert same_environments(environments(cell, SW_CUT, ids), environments(parent, SW_CUT, ids))
        # the margin is not the parent's: some margin atom lost neighbours at the cut
        margin_ids = cell.arrays["id"][~core(cell)]
        assert not same_environments(environments(cell, SW_CUT, margin_ids), environments(parent, SW_CUT, margin_ids))
    # a margin below r_cut: the outer core atoms lose neighbours
    thin = CarveRule(max_atoms=128, margin=0.6 * SW_CUT, max_regions=1)
    (cell,) = carve(owned(parent, np.zeros(len(parent), int), 1)[0], parent.cell.array, parent.pbc, thin, Collectives())
    ids = cell.arrays["id"][core(cell)]
    assert not same_environments(environments(cell, SW_CUT, ids), environments(parent, SW_CUT, ids))


def test_core_reference_forces_equal_the_parent_with_two_cutoffs_margin():
    """Stillinger-Weber forces on core atoms equal the parent's to 1e-6 eV/A with margin 2 r_cut,
    and differ with margin 1 r_cut (the force on i depends on atoms up to 2 r_cut away)."""
    from pylal.reference import make_calculator

    parent = parent_cell()
    calc = make_calculator("lammps")
    f_parent = dict(zip(parent.arrays["id"], calc.get_forces(parent)))
    worst = {}
    for margin, max_atoms in ((2 * SW_CUT, 512), (SW_CUT, 128)):
        rule = CarveRule(max_atoms=max_atoms, margin=margin, max_regions=1)
        (cell,) = carve(owned(parent, np.zeros(len(parent), int), 1)[0], parent.cell.array, parent.pbc, rule,
                        Collectives())
        assert len(cell) <= max_atoms
        f_cell = calc.get_forces(cell)[core(cell)]
        f_ref = np.array([f_parent[i] for i in cell.arrays["id"][core(cell)]])
        worst[margin] = np.abs(f_cell - f_ref).max()
    assert worst[2 * SW_CUT] < 1e-6
    assert worst[SW_CUT] > 1e-5  # measured 5.7e-5 eV/A: SW's cutoff function is very smooth near r_cut


@pytest.mark.parametrize("n_owners", [2, 4])
def test_same_cells_on_any_number_of_owners(n_owners):
    parent = parent_cell()
    rule = CarveRule(max_atoms=96, margin=SW_CUT, max_regions=3)
    serial = carve_on_owners(parent, rule, 1)
    split = carve_on_owners(parent, rule, n_owners)
    assert len(split) == len(serial) == 3
    for a, b in zip(serial, split):
        assert (a.arrays["id"] == b.arrays["id"]).all() and (core(a) == core(b)).all()
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
        np.testing.assert_allclose(a.cell.array, b.cell.array, atol=1e-12)


def test_bad_rules_say_which_keyword():
    parent = parent_cell(repeat=5)
    own = owned(parent, np.zeros(len(parent), int), 1)[0]
    with pytest.raises(CarveError, match="carve_margin"):
        carve(own, parent.cell.array, parent.pbc, CarveRule(max_atoms=32, margin=6.0), Collectives())
    with pytest.raises(CarveError, match="label_max_atoms"):
        carve(own, parent.cell.array, parent.pbc, CarveRule(max_atoms=800, margin=3.0), Collectives())


def test_cluster_is_a_sphere_without_periodicity():
    parent = parent_cell(repeat=5)
    rule = CarveRule(max_atoms=100, margin=SW_CUT, shape="cluster", gap=5.0, max_regions=1)
    (cell,) = carve(owned(parent, np.zeros(len(parent), int), 1)[0], parent.cell.array, parent.pbc, rule,
                    Collectives())
    assert not cell.pbc.any() and len(cell) <= 100
    r = np.linalg.norm(cell.positions - 0.5 * cell.cell.diagonal(), axis=1)
    assert r.max() < cell.info["carve_half_width"] and r[core(cell)].max() < cell.info["carve_half_width"] - SW_CUT
    ids = cell.arrays["id"][core(cell)]
    assert same_environments(environments(cell, SW_CUT, ids), environments(parent, SW_CUT, ids))


def labelled(atoms, calc):
    from ase.calculators.singlepoint import SinglePointCalculator

    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=calc.get_potential_energy(atoms), forces=calc.get_forces(atoms),
                                     stress=calc.get_stress(atoms))
    return out


@pytest.mark.slow
def test_masked_fit_equals_the_fit_on_the_parents_core_rows():
    """Carved labels (core forces only, margin 2 r_cut) and whole-cell labels in one fit equal the
    fit whose rows for those core atoms come from the labelled parent."""
    from pylal.fit.committee import FitSettings, fit_design
    from pylal.fit.design import DesignSet
    from pylal.model.basis import BasisSpec
    from pylal.reference import make_calculator

    spec = BasisSpec(species=("Si",), r_cut=3.8, n_max=4, l_max=2)
    calc = make_calculator("lammps")
    parent = labelled(parent_cell(repeat=5, seed=3), calc)
    rule = CarveRule(max_atoms=360, margin=2 * spec.r_cut, max_regions=1)
    (cell,) = carve(owned(parent, np.zeros(len(parent), int), 1)[0], parent.cell.array, parent.pbc, rule, Collectives())
    cell.calc = labelled(cell, calc).calc
    whole = [labelled(diamond_si(1, rattle=0.15, seed=s), calc) for s in range(4)]

    psi_cell, y_cell, kinds_cell = configuration_rows(spec, cell)
    psi_parent, y_parent, _ = configuration_rows(spec, parent)
    index = np.searchsorted(parent.arrays["id"], cell.arrays["id"][core(cell)])
    rows = 1 + (3 * index[:, None] + np.arange(3)).ravel()  # after the parent's energy row
    assert set(kinds_cell) == {"F"} and len(kinds_cell) == 3 * core(cell).sum()
    np.testing.assert_allclose(psi_cell, psi_parent[rows], atol=1e-10)
    np.testing.assert_allclose(y_cell, y_parent[rows], atol=1e-6)

    fits = []
    for block in ((psi_cell, y_cell), (psi_parent[rows], y_parent[rows])):
        design = DesignSet(spec)
        for atoms in whole[:2]:
            design.add(atoms)
        design.add_block(*block, kinds_cell)
        for atoms in whole[2:]:
            design.add(atoms)
        fits.append(fit_design(design, FitSettings(n_members=4), seed=0))
    np.testing.assert_allclose(fits[0].mean, fits[1].mean, rtol=1e-6, atol=1e-9)


def test_fix_keywords_and_server_store_keep_the_mask(tmp_path):
    from pylal.lammps.settings import FixArgumentError, parse_fix_args
    from pylal.server import protocol
    from pylal.server.store import Store

    base = ["p.npz", "elements", "Si"]
    settings = parse_fix_args(base + ["label_max_atoms", "64", "carve", "cluster", "carve_gap", "6"])
    rule = settings.carve_rule(r_cut=3.8)
    assert (rule.max_atoms, rule.shape, rule.gap, rule.margin) == (64, "cluster", 6.0, 3.8)
    for bad, keyword in ((["carve", "sphere"], "carve"), (["label_max_atoms", "-1"], "label_max_atoms"),
                         (["carve_margin", "x"], "carve_margin"), (["carve_regions", "0"], "carve_regions")):
        with pytest.raises(FixArgumentError, match=f"'{keyword}'"):
            parse_fix_args(base + bad)

    from pathlib import Path

    from pylal.campaign.config import CampaignConfig, ConfigError
    inputs = Path(__file__).resolve().parents[1] / "inputs" / "si"
    for walker, keyword in (({"repeat": [4, 0, 4]}, "repeat"), ({"vacancies": -1}, "vacancies")):
        with pytest.raises(ConfigError, match=keyword):
            CampaignConfig.from_dict({"walkers": [walker]}, base=inputs, run_dir=tmp_path / "run")

    parent = parent_cell()
    (cell,) = carve(owned(parent, np.zeros(len(parent), int), 1)[0], parent.cell.array, parent.pbc,
                    CarveRule(max_regions=1), Collectives())
    core_idx = np.flatnonzero(core(cell)).tolist()
    with pytest.raises(protocol.ProtocolError, match="core"):
        protocol._check_prov({"core": [1, -2]})
    store = Store(tmp_path / "store.db")
    row, _, _ = store.add_flag(cell, {"step": 7, "core": core_idx, "parent_step": 7})
    store.mark_labeled(row, {"energy": 1.0, "forces": np.ones((len(cell), 3))}, 0.1, 1)
    (_, atoms), = store.labeled_atoms()
    assert atoms.info[PARTIAL] and (atoms.arrays[FORCE_WEIGHTS] == cell.arrays[FORCE_WEIGHTS]).all()


@pytest.mark.mpi
def test_fix_pylal_on_two_ranks_carves_what_one_process_carves(tmp_path):
    """A 510-atom cell flagged in LAMMPS on 2 ranks (fix pylal label_max_atoms 100): the carved flag
    files equal carve() of the dumped configuration and f_i in one process."""
    carve_in_lammps(tmp_path, ranks=2)


def carve_deck(ranks, max_atoms, regions, extra=""):
    """fix pylal flags cell.data at step 0 (f_tol 0) and carves it: the deck of the LAMMPS carving checks."""
    return f"""units metal
atom_style atomic
atom_modify map array
processors {ranks} 1 1
read_data cell.data
pair_style zero 4.0
pair_coeff * *
fix ml all pylal params.npz elements Si tau 0 check_every 1 f_tol 0 flag_dir flags label_max_atoms {max_atoms} carve_regions {regions}
{extra}
run 0
"""


def carve_in_lammps(tmp_path, ranks):
    """LAMMPS on `ranks` ranks flags a 510-atom cell at step 0 and carves it; checks the flag files
    against carve() in this process. Returns the number of carved cells."""
    import ase.io
    from conftest import random_parameters
    from lammps_util import read_dump, run_lmp, write_data
    from pylal.model.basis import BasisSpec

    spec = BasisSpec(species=("Si",), r_cut=3.5, n_max=4, l_max=2)
    random_parameters(spec, n_members=8, seed=1).save(tmp_path / "params.npz")
    atoms = parent_cell(repeat=4, vacancies=2)
    write_data(atoms, tmp_path / "cell.data", ["Si"])
    deck = carve_deck(ranks, max_atoms=100, regions=2, extra="dump d all custom 1 fi.dump id x y z f_ml[1]\n"
                                                             "dump_modify d format float %22.16g")
    run_lmp(deck, tmp_path, ranks=ranks, timeout=300)
    frame = read_dump(tmp_path / "fi.dump")[0]
    own = OwnedAtoms(frame[:, 0].astype(int), np.full(len(frame), 14), frame[:, 1:4], frame[:, 4])
    expected = carve(own, atoms.cell.array, atoms.pbc, CarveRule(max_atoms=100, margin=3.5, max_regions=2),
                     Collectives())
    flags = sorted((tmp_path / "flags").glob("flag_*_r*.xyz"))
    assert len(flags) == len(expected) >= 1
    for path, want in zip(flags, expected):
        got = ase.io.read(path)
        assert len(got) <= 100 and got.info["step"] == 0
        assert (got.arrays["id"] == want.arrays["id"]).all()
        assert (got.arrays[FORCE_WEIGHTS] == want.arrays[FORCE_WEIGHTS]).all()
        np.testing.assert_allclose(got.positions, want.positions, atol=1e-9)
    return len(flags)
