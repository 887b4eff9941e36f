import pytest

from t2diff.paths import data_dir

requires_data = pytest.mark.skipif(not (data_dir() / "kuairand").exists(), reason="../shared/data not present")


@requires_data
@pytest.mark.integration
def test_written_config_validates_with_every_section_class(tmp_path):
    from feature_store.settings import FeatureSettings
    from serving.settings import ServingSettings
    from streaming.settings import StreamSettings
    from t2diff.demo.settings import DemoSettings
    from t2diff.demo.setup import DemoSetup
    from t2diff.index import IndexSettings
    from t2diff.registry import RegistrySettings
    from trainer.online.settings import OnlineTrainerSettings

    setup = DemoSetup(DemoSettings(ev_threshold_ms=5_000, max_requests=5), tmp_path)
    setup.prepare()
    path = setup.write_config()
    classes = {"stream": StreamSettings, "features": FeatureSettings, "registry": RegistrySettings,
               "index": IndexSettings, "online_trainer": OnlineTrainerSettings, "serving": ServingSettings}
    assert set(setup.cfg) == set(classes)  # every section the demo writes has a reader (extra="forbid")
    loaded = {key: cls.load(path, key=key) for key, cls in classes.items()}
    # The demo's estimator and serving's own `ab report` of the same run use one effective-view definition.
    assert loaded["serving"].evr_threshold_s == 5.0
