"""Side-by-side benchmark of Mirrorsite against Distribution in proxy mode (`make bench`)."""
