from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "access"
    verbose_name = "Access to the mirror"

    def ready(self) -> None:
        from django.db.models.signals import m2m_changed, post_delete, post_save

        from . import rules, visibility
        from .models import AccessRule, RepositoryVisibility

        # This process sees a changed rule at once; the others within rules.RULES_SECONDS.
        def forget_rules(**_: object) -> None:
            rules.forget()

        def forget_visibility(**_: object) -> None:
            visibility.forget()

        for signal in (post_save, post_delete):
            signal.connect(forget_rules, sender=AccessRule, weak=False)
        # A deleted record (the admin) has the upstream asked again.
        post_delete.connect(forget_visibility, sender=RepositoryVisibility, weak=False)
        m2m_changed.connect(forget_rules, sender=AccessRule.groups.through, weak=False)
