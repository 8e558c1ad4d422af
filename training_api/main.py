"""Entry point: `uvicorn training_api.main:app`."""

from core.settings import get_settings
from training_api.app import create_app

app = create_app(get_settings())
