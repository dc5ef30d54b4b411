"""Huawei Cloud KooGallery (云商店) SaaS produce interface, generation V2 basic."""
