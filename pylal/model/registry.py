"""The basis registry: every basis kind and its spec class, the one place that maps a `kind` to code.

A basis spec (a frozen dataclass) meets one contract, used by the committee step (pylal.model.committee),
the design rows and fit (pylal.fit), the refit server and the parameter files:
  kind, species, r_cut, prior, size, n_species, n_per_species      what it is
  to_dict() / from_dict(d) / from_config(fit_cfg)                  parameter-file header, [fit] table
  arrays(), atomic_features(...), member_pair_gradients(...)       evaluation (see BasisSpec)
  kernel()                                                         a compiled force kernel, or None
  degrees(), constant_columns()                                    the fit's smoothness prior, E0 columns
  size_unset(fit_cfg), grown(), size_label()                       a basis that grows (pylal.fit.growth)
A new basis is one module with such a class plus one `register` line here (or a call of `register` from
the user's code).
"""
from __future__ import annotations

import importlib

_KINDS: dict[str, str] = {
    "power": "pylal.model.basis:BasisSpec",  # pylal's power-spectrum basis
    "ace": "pylal.model.ace:AceSpec",  # ace-jax's ACE basis
}


def register(kind: str, target):
    """Add a basis kind: target is the spec class or "module:Class" (imported when first used)."""
    _KINDS[kind] = target


def kinds() -> list[str]:
    return sorted(_KINDS)


def spec_class(kind: str):
    try:
        target = _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown basis kind {kind!r}; known: {kinds()}") from None
    if isinstance(target, str):
        module, name = target.split(":")
        target = getattr(importlib.import_module(module), name)
    return target


def spec_from_dict(d: dict):
    """A basis spec from its dict (a parameter file header; no kind: the power basis of format 1)."""
    return spec_class(d.get("kind", "power")).from_dict({k: v for k, v in d.items() if k != "kind"})


def spec_from_config(fit_cfg):
    """The basis of a [fit] table (`basis` names the kind); unset size keys start a growing basis."""
    return spec_class(fit_cfg.basis).from_config(fit_cfg)


def basis_grows(fit_cfg) -> bool:
    """An unset basis size grows with the data ([fit] grow; pylal.fit.growth), unless walkers start from
    [fit] initial_params (its basis is theirs, and stays)."""
    return bool(fit_cfg.grow and spec_class(fit_cfg.basis).size_unset(fit_cfg)
                and not getattr(fit_cfg, "initial_params", ""))


def autodiff_member_pair_gradients(spec, vectors, centers, slots, n_slots, center_species, neighbor_species,
                                   pair_mask, node_species, coefs, arrays):
    """The default member gradients of any basis: dE^m/dr_p (M, P, 3) for coefs (M, S, n_per_species), one
    reverse pass of `atomic_features` per coefficient vector (a vmap of its vjp). The power basis
    (pylal.model.member_gradients) and ACE's kernel implement the same contract faster."""
    import jax

    n_centers = node_species.shape[0]

    def features(v):
        return spec.atomic_features(v, centers, center_species, neighbor_species, n_centers, pair_mask, arrays)

    _, pullback = jax.vjp(features, vectors)
    (grads,) = jax.vmap(pullback)(coefs[:, node_species, :])
    return grads * pair_mask[None, :, None]
