"""The lab's stand-in kube-apiserver (HTTPS, discovery, CRUD, watch). Run: python -m lab.apiserver --lab NAME"""
