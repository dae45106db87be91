"""Build-file validation: streaming hash, STL/3MF parsing, mesh integrity, fingerprint, difference report."""
