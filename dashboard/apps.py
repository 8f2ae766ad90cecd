from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from registry import signals

        from . import stats  # its buffer registers with registry.flushing

        # What the pull path announces becomes statistics (stats' recorders never raise).
        signals.repository_targeted.connect(stats.on_repository_targeted, dispatch_uid="dashboard.target")
        signals.upstream_fetched.connect(stats.on_upstream_fetched, dispatch_uid="dashboard.upstream_used")
        signals.upstream_called.connect(stats.on_upstream_called, dispatch_uid="dashboard.upstream_call")
