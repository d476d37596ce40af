"""GitOps: pin pushed images in the overlays (`pin`, a pure text edit) and commit and push
that (`promote`)."""
