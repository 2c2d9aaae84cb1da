"""Provisioning: libvirt daemons, accelerator choice, domain XML, guest lifecycle, leak sweep."""
