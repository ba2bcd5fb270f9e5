"""How the site is configured: one place for the demo, the tests, `serve`
and the deployment."""
import json
from pathlib import Path

import yaml

PACKAGE_DIR = Path(__file__).parent
METADATA_PATH = PACKAGE_DIR / "metadata.yml"
SETTINGS_PATH = PACKAGE_DIR / "settings.json"
DATABASE_NAME = "laion-aesthetic-6pls"
DATABASE_FILE = DATABASE_NAME + ".db"
# The demo's thumbnails: generated pictures (sample_images.py) served by the
# site itself (views.sample_image), while the URLs in the database stay real.
SAMPLE_IMAGE_URL = "/-/laion/sample-image?url={url_encoded}"


def settings():
    """The settings the site runs with: {name: value}."""
    return json.loads(SETTINGS_PATH.read_text())


def setting_args():
    """The settings as `datasette serve` options: ["--setting", name, value, ...]."""
    args = []
    for key, value in settings().items():
        args += ["--setting", key, json.dumps(value) if isinstance(value, bool) else str(value)]
    return args


def metadata():
    return yaml.safe_load(METADATA_PATH.read_text())


def demo_metadata(images_dir):
    """The project's metadata, with thumbnails from the generated pictures
    in ``images_dir``."""
    data = metadata()
    data.setdefault("plugins", {}).setdefault("datasette-laion", {}).update(
        thumbnail_url=SAMPLE_IMAGE_URL, sample_images_dir=str(images_dir))
    return data


def make_datasette(db_path, inspect_file=None, **kwargs):
    """A Datasette serving ``db_path`` exactly as the site does (immutable,
    inspect data, metadata, settings); for tests and scripts."""
    from datasette.app import Datasette

    inspect_data = json.loads(Path(inspect_file).read_text()) if inspect_file else None
    return Datasette(
        immutables=[str(db_path)],
        inspect_data=inspect_data,
        metadata=metadata(),
        settings=settings(),
        **kwargs,
    )


def configured_database_path(metadata_path):
    """The database_path that a metadata file (YAML or JSON) configures for
    the plugin, or None."""
    from datasette.utils import parse_metadata

    metadata = parse_metadata(Path(metadata_path).read_text()) or {}
    return ((metadata.get("plugins") or {}).get("datasette-laion") or {}).get("database_path")
