"""CT-native Diagnose over mutual TLS: synthetic and pydicom studies, heatmaps, bad input,
limits, and the `ucadi diagnose` command."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import threading
import zipfile
from pathlib import Path

import grpc
import numpy as np
import pydicom
import pytest
import torch
from damaged_dicom import DAMAGE
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from services.inference.client import diagnose, heatmap_array
from services.inference.diagnosis import sampled_slice_indices
from services.inference.server import InferenceService, ServiceConfig
from services.inference.upload import UploadLimits
from ucadi.cli import main as ucadi_main
from ucadi.ct import PreprocessConfig, load_study, preprocess_study
from ucadi.ct.dicom_series import DicomSource, choose_series
from ucadi.ct.preprocess import window_and_resize, zscore
from ucadi.ct.synth import generate_case, plan_cohort
from ucadi.model import ModelCard, build_model, save_checkpoint
from ucadi.model.gradcam import grad_cam
from ucadi.ops.tls import TLSFiles, secure_channel

torch.set_num_threads(1)
CLASSES = ["non_covid", "covid"]
CONFIG = PreprocessConfig(size=(32, 32))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = build_model("densenet3d", "cpu-small", num_classes=len(CLASSES))
    save_checkpoint(folder, model, ModelCard.for_model(model, CLASSES, CONFIG.to_dict(),
                                                       version=5))
    return folder


@pytest.fixture(scope="module")
def model(model_dir: Path) -> torch.nn.Module:
    from ucadi.model import load_checkpoint

    return load_checkpoint(model_dir)[0]


@pytest.fixture(scope="module")
def server(model_dir: Path, pki: dict[str, TLSFiles]):
    service = InferenceService(ServiceConfig(
        model_dir=model_dir, limits=UploadLimits(max_upload_bytes=64 << 20, max_slices=300)))
    running = service.start(tls=pki["server"], metrics_address=None)
    channel = secure_channel(running.target, pki["client"],
                             options=(("grpc.max_receive_message_length", 64 << 20),))
    yield running, channel
    channel.close()
    service.stop(0)


@pytest.fixture(scope="module")
def covid_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic COVID-19 case of the `tiny` cohort (DICOM folder)."""
    out = tmp_path_factory.mktemp("synth")
    plan = next(p for p in plan_cohort("tiny", seed=0) if p.label == "covid")
    record = generate_case(plan, "tiny", seed=0, out_dir=out)
    return out / str(record["series_path"])


@pytest.fixture(scope="module")
def pydicom_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 slices made from pydicom's real CT_small.dcm, restacked at 2.5 mm (same pixels)."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    folder = tmp_path_factory.mktemp("ct_small")
    series_uid = generate_uid()
    x, y, z = (float(v) for v in source.ImagePositionPatient)
    for index in range(48):
        slice_ds = source.copy()
        slice_ds.SeriesInstanceUID = series_uid
        slice_ds.SOPInstanceUID = generate_uid()
        slice_ds.file_meta.MediaStorageSOPInstanceUID = slice_ds.SOPInstanceUID
        slice_ds.InstanceNumber = index + 1
        slice_ds.ImagePositionPatient = [x, y, z + 2.5 * index]
        slice_ds.SliceLocation = z + 2.5 * index
        slice_ds.save_as(folder / f"IM{index:04d}.dcm")
    return folder


def in_process_probabilities(model: torch.nn.Module, study: Path, samples: int = 5,
                             seed: int = 0) -> np.ndarray:
    tensor = preprocess_study(study, CONFIG, samples=samples, seed=seed)
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(tensor[:, None])), dim=1).numpy()


def test_synthetic_study_gets_the_in_process_five_sampling_average(server, model, covid_study):
    _, channel = server
    response = diagnose(channel, covid_study)
    expected = in_process_probabilities(model, covid_study)
    assert [p.class_name for p in response.probabilities] == CLASSES
    got = np.array([p.probability for p in response.probabilities])
    np.testing.assert_allclose(got, expected.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(response.sample_probabilities).reshape(5, 2), expected,
                               rtol=1e-5, atol=1e-6)
    assert response.samples == 5 and response.model_version == "5"
    assert response.predicted_class == CLASSES[int(np.argmax(got))]
    assert response.covid_probability == pytest.approx(got[1])
    assert (response.card.arch, response.card.preset) == ("densenet3d", "cpu-small")
    assert list(response.card.input_shape) == [1, 16, 32, 32]
    assert response.study.slices == load_study(covid_study).volume_hu.shape[0]
    assert not response.HasField("heatmap")


def test_heatmap_is_aligned_to_the_first_sampling_and_its_ct_slices(server, model, covid_study):
    _, channel = server
    response = diagnose(channel, covid_study, want_heatmap=True, seed=11)
    heatmap = heatmap_array(response)
    assert heatmap.shape == (16, 32, 32)
    assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    first = preprocess_study(covid_study, CONFIG, samples=5, seed=11)[0]
    target = CLASSES.index(response.predicted_class)
    np.testing.assert_allclose(heatmap, grad_cam(model, first, target), atol=1e-3)
    indices = np.array(response.heatmap.slice_indices)
    assert len(indices) == 16 and np.all(np.diff(indices) > 0)
    assert 0 <= indices[0] and indices[-1] < response.study.slices
    volume = load_study(covid_study).volume_hu
    np.testing.assert_allclose(zscore(window_and_resize(volume[indices], CONFIG)[None])[0],
                               first, atol=1e-4)
    png = response.heatmap.png
    assert png.startswith(PNG_MAGIC)
    assert Image.open(io.BytesIO(png)).size[0] >= 4 * 32


def test_zip_upload_gives_the_same_answer_as_the_folder(server, covid_study, tmp_path: Path):
    _, channel = server
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(covid_study.iterdir()):
            zipped.write(path, f"series/{path.name}")
    from_zip = diagnose(channel, archive)
    from_folder = diagnose(channel, covid_study)
    assert list(from_zip.sample_probabilities) == pytest.approx(
        list(from_folder.sample_probabilities), abs=1e-6)


def test_nifti_upload_is_diagnosed(server, covid_study, tmp_path: Path):
    import nibabel

    _, channel = server
    volume = load_study(covid_study).volume_hu
    nifti = tmp_path / "study.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume.transpose(2, 1, 0)[::-1, ::-1], np.eye(4)),
                 str(nifti))
    response = diagnose(channel, nifti)
    assert response.study.slices == volume.shape[0]
    assert sum(p.probability for p in response.probabilities) == pytest.approx(1.0, abs=1e-5)


def test_series_built_from_pydicom_ct_file_is_diagnosed(server, model, pydicom_series):
    _, channel = server
    response = diagnose(channel, pydicom_series, samples=3, seed=2)
    assert response.study.slices == 48 and response.samples == 3
    got = np.array([p.probability for p in response.probabilities])
    expected = in_process_probabilities(model, pydicom_series, samples=3, seed=2).mean(axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _pydicom_dir(name: str) -> Path:
    return Path(pydicom.data.__file__).parent / "test_files" / name


@pytest.mark.parametrize("case,make,message", [
    ("not DICOM", lambda d: (d / "a.dcm").write_bytes(os.urandom(4096)), "no DICOM files"),
    ("not CT", lambda d: shutil.copy(get_testdata_file("MR_small.dcm", download=False), d),
     "holds MR images, not CT"),
    ("too few slices", lambda d: shutil.copytree(_pydicom_dir("dicomdirtests/77654033/CT2"),
                                                 d, dirs_exist_ok=True), "at least 40"),
    ("compressed single CT slice", lambda d: shutil.copy(
        get_testdata_file("693_J2KI.dcm", download=False), d), "at least 40"),
])
def test_bad_study_gets_invalid_argument_with_the_loader_message(server, tmp_path, case, make,
                                                                 message):
    running, channel = server
    make(tmp_path)
    with pytest.raises(grpc.RpcError) as refused:
        diagnose(channel, tmp_path)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert message in refused.value.details()
    assert "ucadi-study-" not in refused.value.details()


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_slice_gets_invalid_argument_naming_the_file(server, covid_study, tmp_path,
                                                               damage):
    # Issue 18: a truncated or bit-flipped slice was INTERNAL ("see the server log").
    _, channel = server
    study = tmp_path / "study"
    shutil.copytree(covid_study, study)
    chosen = choose_series([DicomSource(p) for p in sorted(study.iterdir())])
    first_sampled = sampled_slice_indices(len(chosen.slices), CONFIG.slices, seed=0)[0]
    victim = chosen.slices[first_sampled].source.path  # Diagnose decodes sampled slices only
    DAMAGE[damage](victim)
    with pytest.raises(grpc.RpcError) as refused:
        diagnose(channel, study, samples=1, seed=0)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{victim.name} cannot be decoded" in refused.value.details()
    assert "ucadi-study-" not in refused.value.details()


@pytest.mark.parametrize("names,message", [
    (["x" * 70_000], "cannot be stored"), (["IM\x000001.dcm"], "cannot be stored"),
    (["a" * 256], "cannot be stored"), (["a", "a/IM0001.dcm"], "both a file and a folder"),
    (["a/IM0001.dcm", "a"], "both a file and a folder"),
])
def test_file_names_a_file_system_cannot_store_are_invalid(server, names, message):
    # Found by `make chaos`: such names ended Diagnose with INTERNAL (an OSError).
    from ucadi.v1 import common_pb2, inference_pb2, inference_pb2_grpc

    data = b"\0" * 256
    chunk = common_pb2.Chunk(offset=0, data=data, total_size=len(data),
                             sha256=hashlib.sha256(data).hexdigest())
    requests = [inference_pb2.DiagnoseRequest(options=inference_pb2.DiagnoseOptions()), *(
        inference_pb2.DiagnoseRequest(file=inference_pb2.StudyFileChunk(name=n, chunk=chunk))
        for n in names)]
    with pytest.raises(grpc.RpcError) as refused:
        inference_pb2_grpc.DiagnosisServiceStub(server[1]).Diagnose(iter(requests), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details() and len(refused.value.details()) < 1000


def test_out_of_range_samples_and_missing_options_are_invalid(server, covid_study):
    _, channel = server
    with pytest.raises(grpc.RpcError) as refused:
        diagnose(channel, covid_study, samples=17)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "between 1 and 16" in refused.value.details()
    from ucadi.v1 import inference_pb2, inference_pb2_grpc

    stub = inference_pb2_grpc.DiagnosisServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Diagnose(iter([inference_pb2.DiagnoseRequest(
            file=inference_pb2.StudyFileChunk(name="../etc/passwd"))]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first Diagnose message must carry the options" in refused.value.details()
    with pytest.raises(grpc.RpcError) as refused:
        stub.Diagnose(iter([
            inference_pb2.DiagnoseRequest(options=inference_pb2.DiagnoseOptions()),
            inference_pb2.DiagnoseRequest(file=inference_pb2.StudyFileChunk(name="../x"))]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "relative path" in refused.value.details()


@pytest.mark.parametrize("limits,message", [
    (UploadLimits(max_upload_bytes=64 << 10, max_slices=300), "upload exceeds"),
    (UploadLimits(max_upload_bytes=64 << 20, max_slices=40), "at most 40"),
])
def test_upload_over_the_limits_gets_resource_exhausted(model_dir, pki, covid_study, limits,
                                                        message):
    service = InferenceService(ServiceConfig(model_dir=model_dir, limits=limits))
    running = service.start(tls=pki["server"], metrics_address=None)
    try:
        with secure_channel(running.target, pki["client"]) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                diagnose(channel, covid_study)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert message in refused.value.details()
    finally:
        service.stop(0)


def test_ucadi_diagnose_prints_the_table_and_writes_the_heatmap(server, pki, covid_study,
                                                                tmp_path, capsys):
    running, _ = server
    png, array = tmp_path / "heatmap.png", tmp_path / "heatmap.npy"
    code = ucadi_main(["diagnose", str(covid_study), "--server", running.target,
                       "--tls-dir", str(pki["client"].ca.parent), "--heatmap", str(png),
                       "--heatmap-array", str(array)])
    out = capsys.readouterr().out
    assert code == 0
    assert "covid" in out and "predicted" in out and "version 5" in out
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert np.load(array).shape == (16, 32, 32)


def test_ucadi_diagnose_reports_a_refused_study_with_exit_code_1(server, pki, tmp_path, capsys):
    running, _ = server
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom file" * 100)
    code = ucadi_main(["diagnose", str(tmp_path), "--server", running.target,
                       "--tls-dir", str(pki["client"].ca.parent)])
    assert code == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


def test_studies_beyond_the_concurrency_limit_get_resource_exhausted(model_dir, pki,
                                                                     covid_study):
    from ucadi.v1 import inference_pb2, inference_pb2_grpc

    service = InferenceService(ServiceConfig(model_dir=model_dir, limits=UploadLimits(
        max_concurrent_studies=1)))
    running = service.start(tls=pki["server"], metrics_address=None)
    release = threading.Event()

    def slow_upload():
        yield inference_pb2.DiagnoseRequest(options=inference_pb2.DiagnoseOptions())
        release.wait(30)

    try:
        with secure_channel(running.target, pki["client"]) as channel:
            stub = inference_pb2_grpc.DiagnosisServiceStub(channel)
            holder = stub.Diagnose.future(slow_upload())
            for _ in range(1500):  # up to 30 s on a loaded machine
                # Only once the holder's stream occupies the slot (it may reach the server
                # after the probe below would, on a loaded machine).
                if service.store.ready and service.study_slots.in_use and not holder.done():
                    try:
                        diagnose(channel, covid_study)
                    except grpc.RpcError as exc:
                        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            assert "already being diagnosed" in exc.details()
                            break
                        raise
                threading.Event().wait(0.02)
            else:
                state = f"holder done: {holder.done()}"
                if holder.done():
                    state += f", holder error: {holder.exception()!r}"
                pytest.fail(f"a second study was admitted while the only slot was taken ({state})")
            release.set()
            with pytest.raises(grpc.RpcError):
                holder.result(timeout=30)  # it sent no files: INVALID_ARGUMENT
            assert diagnose(channel, covid_study).samples == 5
    finally:
        release.set()
        service.stop(0)
