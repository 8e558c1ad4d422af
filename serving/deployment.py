"""The Ray Serve application: `serve run serving/serve_config.yaml` (import path
`serving.deployment:app`)."""

from ray import serve

from core.settings import get_settings
from serving.runtime import attach_service, new_app, start_background, stop_background

ingress = new_app(under_ray=True)


@serve.deployment(name="Predictor")
@serve.ingress(ingress)
class Predictor:
    async def __init__(self) -> None:
        self.service = attach_service(get_settings())
        self.tasks = start_background(self.service)

    async def check_health(self) -> None:
        """Ray restarts a replica whose background work died."""
        for task in self.tasks:
            if task.done() and task.get_name() != "warm-up":
                raise RuntimeError(f"{task.get_name()} stopped: {task.exception()!r}")

    async def __del__(self) -> None:
        await stop_background(self.tasks)


app = Predictor.bind()
