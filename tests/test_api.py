"""The notebook API (sharpgen.api): targets as astropy Quantities checked like the CLI's, SunPy Maps and pandas
tables out, and docs/tutorial.md executed cell by cell against the test run."""

from __future__ import annotations

import re
import subprocess
import sys

import astropy.units as u
import numpy as np
import pytest
import sunpy.map

import sharpgen
from sharpgen.errors import SharpgenError


def test_importing_sharpgen_loads_neither_torch_nor_sunpy():
    code = "import sys, sharpgen; sharpgen.open_run; print(any(m in sys.modules for m in ('torch', 'sunpy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_measure_gives_quantities_of_a_real_sharp_file_or_map(real_sharp_files):
    from sharpgen.data.measure import fits_properties

    path = real_sharp_files[0]
    expected = fits_properties(path)
    for source in (path, sunpy.map.Map(path)):
        values = sharpgen.measure(source)
        assert values["usflux"].unit == u.Mx and values["psep_mm"].unit == u.Mm and values["tuf"].unit == u.kG
        assert values["usflux"].to_value(u.Mx) == pytest.approx(expected["usflux"], rel=1e-6)
        assert values["pixel_x_mm"].to_value(u.Mm) == pytest.approx(expected["pixel_x_mm"], rel=1e-9)


def test_a_missing_run_is_one_line(tmp_path):
    with pytest.raises(SharpgenError, match="no such results directory"):
        sharpgen.open_run(tmp_path / "nowhere")


@pytest.mark.slow
def test_generate_takes_quantities_and_refuses_like_the_cli(test_run, tmp_path):
    run = sharpgen.open_run(test_run, device="cpu")
    flux = float(np.median(run.steering.samples["usflux"]))
    result = run.generate(usflux=flux * 1e-8 * u.Wb, n=2, seed=0, out_dir=tmp_path / "gen")  # 1 Wb = 1e8 Mx
    assert result.table["target_usflux"].tolist() == pytest.approx([flux, flux], rel=1e-12)
    assert [m.unit for m in result.maps] == [u.G, u.G] and len(result.latents) == 2
    for smap, path in zip(result.maps, result.files, strict=True):
        assert np.allclose(smap.data, sunpy.map.Map(path).data)
    refused = {
        "usflux": (40 * u.Mm, "not in units of Mx"),
        "tuf": (1e3 * u.kG, "out of reach"),
        "nonsense": (1.0, "unknown property"),
    }
    for name, (value, message) in refused.items():
        with pytest.raises(SharpgenError, match=message):
            run.generate(n=1, out_dir=tmp_path / "refused", **{name: value})
    assert not (tmp_path / "refused").exists()
    with pytest.raises(SharpgenError, match="same quantity in two units"):
        run.generate(usflux=flux * u.Mx, tuf=0.05 * u.kG, out_dir=tmp_path / "refused")


@pytest.mark.slow
def test_tutorial_runs_against_the_test_run(test_run, repo_root, tmp_path, monkeypatch):
    text = (repo_root / "docs" / "tutorial.md").read_text()
    cells = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(cells) >= 5 and cells[0].startswith("RESULTS = ")
    cells[0] = f"RESULTS = {str(test_run)!r}\n"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, cell in enumerate(cells):
        try:
            exec(compile(cell, f"tutorial cell {i}", "exec"), namespace)
        except Exception as exc:  # name the cell that broke
            raise AssertionError(f"docs/tutorial.md cell {i} failed:\n{cell}\n{exc!r}") from exc
    assert len(namespace["result"].maps) == 4
    assert set(namespace["matches"]["rank"]) == {1, 2, 3} and "map" in namespace["matches"]
    assert (tmp_path / "generated_000.png").stat().st_size > 5000
