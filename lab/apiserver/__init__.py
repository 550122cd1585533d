"""The lab's stand-in kube-apiserver (HTTPS, discovery, CRUD, watch).

Run: python -m kubeweft.lab.apiserver --lab NAME
"""
