"""KooGallery V2 joint-operation (联营) Kit sync: tenantSync, applicationSync, authSync, the org syncs."""
