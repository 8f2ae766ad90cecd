"""`manage.py pin <image>... [--remove] [--all-tags]` and `manage.py pin --list`."""

from __future__ import annotations

import getpass

from django.core.management.base import BaseCommand, CommandError

from registry.jobs import pins
from registry.jobs.imageref import ImageRefInvalid, parse_image
from registry.models import Pin


class Command(BaseCommand):
    help = "Pin images so garbage collection never evicts them (or unpin them with --remove)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "images", nargs="*", help="[registry/]name[:tag|@digest]; a pinned tag keeps what it points at"
        )
        parser.add_argument("--remove", action="store_true", help="unpin")
        parser.add_argument("--all-tags", action="store_true", help="pin (or unpin) the whole repository")
        parser.add_argument("--note", default="", help="why it is pinned (shown in the admin)")
        parser.add_argument("--list", action="store_true", help="list the pins")

    def handle(self, *args, **options) -> None:
        if options["list"] or not options["images"]:
            for pin in Pin.objects.select_related("upstream").order_by("upstream__name", "repository", "reference"):
                note = f"  # {pin.note}" if pin.note else ""
                self.stdout.write(f"{pin.upstream.name}  {pin}{' (all tags)' if not pin.reference else ''}{note}")
            return
        whole = options["all_tags"]
        for text in options["images"]:
            try:
                image = parse_image(text)
            except ImageRefInvalid as error:
                raise CommandError(str(error)) from None
            shown = image.repository if whole else str(image)
            if options["remove"]:
                removed = pins.unpin(image, whole_repository=whole)
                self.stdout.write(f"unpinned {shown}" if removed else f"{shown} was not pinned")
            else:
                pins.pin(image, whole_repository=whole, created_by=getpass.getuser(), note=options["note"])
                self.stdout.write(f"pinned {shown}")
