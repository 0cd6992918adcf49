# %% [markdown]
# # textbook

# %%
print(1)
