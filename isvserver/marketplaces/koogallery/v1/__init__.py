"""KooGallery V1 (retired for new products, still called for old ones): GET on the produce path.

`auth` (authToken, spec §2.3), `schemas` (spec §9), `buyers` (the buyer's PII, sealed), `licenses`
(License products), `handlers` (each activity on the one lifecycle), `views` (the Endpoint in the one
call pipeline), `marketplace` and `simulator` (the marketplace's side).
"""
