"""python -m bench.peer: reconstruction quality and speed against an iterative peer (pty-chi).

On one simulated test scan (test.npz of ``python -m ptycho_torch.simulate``) this compares our
trained model's stitched reconstruction with pty-chi's ePIE and LSQML run to convergence:
amplitude and phase SSIM, PSNR and FRC50 against the ground truth ``objectGuess``, and the
wall time to the reconstruction. Both sides get the same diffraction data, probe, positions
and photons; pty-chi's probe and positions are fixed (our model uses the known probe too),
its object starts at ones. Every reconstruction is scored by ``ptycho_torch.metrics`` on the
region our inference scores (``ptycho_torch.workflows.evaluate``: the box our stitched
patches cover, trimmed by half a stitch crop), after the same phase-plane and amplitude-scale
alignment.

Writes ``<out>/<date>-<device>-peer.json``, ``.md``, ``.png`` (ground truth, ours, ePIE,
LSQML amplitude and phase) and ``-peer-convergence.png`` (data-fit loss per iteration, SSIM
against pty-chi's wall time). pty-chi is an extra of the bench only:
``pip install -e '.[bench]'``.

Modules: ``ptychi`` (our scan -> pty-chi's inputs and options; the conventions matched),
``runs`` (simulation, default training, our timed inference, pty-chi's timed iterations),
``convergence`` (loss curves judged, noise floor, time to reach our SSIM), ``record`` (the
report as frozen dataclasses; its JSON is ``dataclasses.asdict``), ``report`` (markdown and
figures from the record), ``cli`` (flags).
"""
