"""Models: architectures (`archs/`), checkpoint reading, named models (`zoo`), chains, network interpolation
(`blend`) and export. Knows nothing of frames in containers; sits above `formats`, `errors` and `color` only."""
