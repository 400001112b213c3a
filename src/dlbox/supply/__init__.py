"""The supply chain of an image: its packages against advisories (scan) and its SBOM."""
