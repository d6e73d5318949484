"""A local Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

`pki` makes the serving certificate, the service-account key and the token file; `kubeconfig` writes and
reads the kubeconfig a client uses; `processes` starts detached processes, records them and stops them;
`controlplane` runs the three in order and waits for each; `command` is `servectl cluster up|down|status`.
The tests' API server fixture (tests/kube_api.py) drives the same `controlplane`, so what the tests run on
is what the command starts.
"""
