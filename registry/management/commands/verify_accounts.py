"""`manage.py verify_accounts`: check every upstream account now by fetching a token."""

from django.core.management.base import BaseCommand

from registry.upstreams import verification


class Command(BaseCommand):
    help = "Verify every upstream account (fetches a token; downloads nothing)."

    def handle(self, *args, **options) -> None:
        verification.verify_all()
