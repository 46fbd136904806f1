"""Computed spectra from stored structures: FEFF10 XANES as provenance-tracked jobs.

- :mod:`inputs`: absorbing sites (symmetry-inequivalent) and the FEFF input from
  pymatgen's ``MPXANESSet`` with every parameter and override recorded;
- :mod:`runner`: one FEFF10 run in a work folder (``feff10`` wrapper), ``xmu.dat`` parsed;
- :mod:`labels`: per-site labels from the structure (oxidation state, first-shell distance);
- :mod:`compute`: the platform side (structure records selected by SQL → committed spectra);
- :mod:`recipe`: the structures of the shipped computed Ni K-edge set (pymatgen prototypes);
- :mod:`dataset`: that set's export from a lake and its loader (no FEFF run);
- :mod:`transfer`: the experiment: train on the computed spectra per featurizer, shift
  robustness, predictions on measured spectra;
- :mod:`cli`: ``matlake feff compute|recipe|export|load|list|transfer``.

FEFF itself is optional (extra ``feff``: the ``feff10-rs`` wheel); everything but
:mod:`runner` and :func:`compute.compute` (loading the shipped set, labels, the
transfer experiment) works without it.
"""
