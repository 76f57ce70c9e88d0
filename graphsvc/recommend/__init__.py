"""Recommendations for users from the user–movie rating graph: the rating histories
pulled from the store (`ratings`), training the user tower (`training`), each user's
top k unrated movies (`ranking`) and the artifact the service answers from (`artifact`).
The model itself lives with the other models (`graphsvc.models.user_tower`)."""
