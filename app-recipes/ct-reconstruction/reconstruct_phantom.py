"""Smoke test: reconstruct the Shepp-Logan phantom by FBP and by SART, check the error."""

import numpy as np
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, iradon_sart, radon, rescale

phantom = rescale(shepp_logan_phantom(), 0.25)  # 100 x 100: seconds, not minutes
angles = np.linspace(0.0, 180.0, 120, endpoint=False)
sinogram = radon(phantom, theta=angles)


def rmse(image: np.ndarray) -> float:
    return float(np.sqrt(np.mean((image - phantom) ** 2)))


fbp = rmse(iradon(sinogram, theta=angles, filter_name="ramp"))
sart = iradon_sart(sinogram, theta=angles)
sart = rmse(iradon_sart(sinogram, theta=angles, image=sart))  # two SART iterations
assert fbp < 0.1, f"FBP reconstruction too far from the phantom: {fbp}"
assert sart < 0.1, f"SART reconstruction too far from the phantom: {sart}"
print(f"fbp rmse={fbp:.4f} sart rmse={sart:.4f} OK")
