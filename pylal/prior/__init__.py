"""Physics priors for Delta-learning (Shuaibi et al. 2020, eqs. 1-4): E = E_prior + E_ML.

  spec.py      LammpsPrior: the prior as a LAMMPS pair style, stored in the parameter file
  deck.py      lammps_commands(prior, elements, r_cut): the deck's pair_style / pair_coeff lines
  evaluate.py  PriorEvaluator: energy, forces, virial of an ase.Atoms through LAMMPS (fit, ASE path)
  morse.py     Morse parameters from dimer curves, mixing rules, morse_prior(...)
  cli.py       `pylal prior commands|fit-morse|show`
docs/prior.md describes the whole.
"""
from pylal.prior.deck import lammps_commands
from pylal.prior.spec import LammpsPrior, PriorError

__all__ = ["LammpsPrior", "PriorError", "lammps_commands", "PriorEvaluator"]


def __getattr__(name):  # the evaluator imports LAMMPS: only on demand
    if name == "PriorEvaluator":
        from pylal.prior.evaluate import PriorEvaluator

        return PriorEvaluator
    raise AttributeError(name)
