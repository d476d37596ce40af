"""Smoke test: two optimisation steps of a small MLP on synthetic data; loss must drop."""

import jax
import jax.numpy as jnp
import optax

key_x, key_w1, key_w2 = jax.random.split(jax.random.PRNGKey(0), 3)
x = jax.random.normal(key_x, (256, 16))
y = jnp.sin(x.sum(axis=1, keepdims=True))
params = {
    "w1": jax.random.normal(key_w1, (16, 32)) * 0.1,
    "w2": jax.random.normal(key_w2, (32, 1)) * 0.1,
}


def loss_fn(p: dict) -> jax.Array:
    hidden = jnp.tanh(x @ p["w1"])
    return jnp.mean((hidden @ p["w2"] - y) ** 2)


optimiser = optax.adam(1e-2)
state = optimiser.init(params)


@jax.jit
def step(p: dict, s: optax.OptState) -> tuple[dict, optax.OptState, jax.Array]:
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, s = optimiser.update(grads, s)
    return optax.apply_updates(p, updates), s, loss


params, state, first = step(params, state)
params, state, _ = step(params, state)
second = loss_fn(params)
assert second < first, f"loss did not decrease: {first} -> {second}"
print(f"devices={jax.devices()}")
print(f"step 2 loss={float(second):.5f} < step 1 loss={float(first):.5f} OK")
