"""The README's quickstart: data, client work, algorithm, where it runs."""

import fedloom as fl

# Data: scikit-learn's digits, split over 50 clients with Dirichlet(0.5) label skew.
clients = fl.data.digits().split(fl.data.dirichlet(0.5), clients=50, seed=0)
print(clients.report().table(max_rows=5))

# Client work: 2 local epochs of minibatch SGD on a small PyTorch MLP.
train = fl.torch.local_sgd(fl.torch.mlp(64, [64], 10), lr=0.2, epochs=2, batch_size=16)

# Algorithm: any recipe; stages compose onto it.
algorithm = fl.fedprox(train, mu=0.01).with_stages(fl.clip_by_norm(5.0))

# Where it runs: here, in one process; 10 clients a round.
history = fl.simulate(algorithm, clients, rounds=20, cohort=10, seed=0)
print(history.table(max_rows=8))
