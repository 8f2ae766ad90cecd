from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"
    verbose_name = "Registry cache"

    def ready(self) -> None:
        from registry.upstreams import usage as accountusage  # noqa: F401 (their buffers register for the exit flush)
        from registry.proxy import pulltimes
